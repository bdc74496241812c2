"""Engine (ask/tell), controller, samplers, strategies, Pareto tools, selection and
trial records: the optimization itself, with no server or CLI in it."""
