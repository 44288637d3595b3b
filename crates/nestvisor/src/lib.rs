//! Library side of the `nestvisor` program: the glue that wires the software CPU, the board and
//! the hypervisor together, so that integration tests and benchmarks drive the same code as the
//! command line.
