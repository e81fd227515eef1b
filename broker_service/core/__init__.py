"""The learning maths, free of I/O and of the simulator: numpy twins of the agent's model and
round, aggregation, the algorithms' server-side verbs, few-shot evaluation, settings, θ_0,
cohorts and the named random streams."""
