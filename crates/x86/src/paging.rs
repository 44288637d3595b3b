//! Paging-structure entry formats. (Being filled in.)
