//! CPU profiler: perf-event sampling of kernel and user stacks.
