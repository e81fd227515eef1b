// Type-checks the provisioned dashboard against Grafana's published schema (@grafana/schema).
// JSON imports widen string values to `string`, so enum-typed fields are loosened to accept
// their literal values; everything else is checked as Grafana declares it.
import type { Dashboard, Panel } from '@grafana/schema';
import dashboard from '../../deploy/grafana/dashboards/tinymetafed.json';

type Loose<T> = T extends string
  ? string
  : T extends number
    ? number
    : T extends boolean
      ? boolean
      : T extends (infer U)[]
        ? Loose<U>[]
        : T extends object
          ? { [K in keyof T]: Loose<T[K]> }
          : T;

const checked: Loose<Dashboard> = dashboard;
const panels: Loose<Panel>[] = dashboard.panels;
export { checked, panels };
