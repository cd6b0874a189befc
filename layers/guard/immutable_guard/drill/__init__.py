"""The drill: attacks on a golden-image workload, and proof, read back from the AWS APIs, that Immutable
Guard detected, alerted, contained, preserved evidence, replaced and nuked — or rightly did nothing.

- scenarios.py: the seven scenarios and how each is verified;
- world.py: what a drill needs from the world it runs in (a guard, a workload, attacks, a pace);
- local.py: that world on the embedded local AWS (the default, `make drill`);
- account.py: that world in a sandbox account around a deployed stack (`drill --stack NAME`);
- organization_world.py and organization_scenarios.py: `drill --organization`, an AWS Organizations
  organisation on the embedded local AWS (issue 14);
- report.py and command.py: the report and the command line."""
