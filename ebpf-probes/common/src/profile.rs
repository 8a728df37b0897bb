//! Records of the CPU profiler (`kscope profile`).
