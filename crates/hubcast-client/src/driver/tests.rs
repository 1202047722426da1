//! Timer behaviour of the driver on a paused clock.
