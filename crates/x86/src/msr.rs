//! Model-specific register numbers (SDM Vol. 4). (Being filled in.)
