"""A transform named by module:function in config.yaml (the YAML's folder is on sys.path)."""


def positive_amounts(context, current, column):
    return current[current[column] > 0]
