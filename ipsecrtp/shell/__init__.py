"""The gateway's I/O shell: the loop around the pure core and the executor of its actions."""
