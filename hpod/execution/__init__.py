"""Where trials run: the local executor (fork server + child process per trial) and
isolated one-off runs."""
