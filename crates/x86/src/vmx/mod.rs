//! Intel VMX definitions. (Being filled in.)
