"""The learning maths, free of I/O: numpy twins of the agent's model and round, aggregation,
the algorithms' server-side verbs, few-shot evaluation, settings, initialisation and cohorts."""
