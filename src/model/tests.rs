//! Table-driven tests of the model, one group per feature.
