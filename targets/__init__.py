"""Device families (installed as `edgekit.targets`): specs, detection, runtime
recipes, runner defaults and power sensors, one module per family.

`host` describes the machine edgekit runs on; it is recorded in every manifest.
"""
