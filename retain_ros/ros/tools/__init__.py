"""Tools that exercise the ROS nodes: measurements and a two-host set-up, one per module.

- :mod:`.node_latency`: camera message published -> action chunk received, split by stage;
- :mod:`.input_load`: the policy node under a high input rate (with :mod:`.load_publisher`,
  the publisher process and a CPU hog, and :mod:`.threads`, CPU time per thread);
- :mod:`.split_hosts`: the robot's and the policy's hosts as two network namespaces, with the
  link delay of :mod:`.delay_relay` where the kernel has no netem;
- :mod:`.checkpoints`: random tiny pi0 checkpoints to measure with.

The benchmarks in ``benchmarks/`` print and tabulate what these measure.
"""
