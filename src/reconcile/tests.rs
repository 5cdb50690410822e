//! Reconcile tests: minimal plans, ordering, drains, adoption, drift, ownership.
