//! How far the simulator runs: the bound that both a migration's clock and the up-front
//! check of a link are held to.

/// The longest simulated migration, in simulated seconds (6 hours). The guest's workload is
/// stepped through every simulated second (about 10 ms of work per second for a 128 MiB
/// guest), so this bounds how long `simulate` runs too.
pub const MAX_SIMULATED_S: f64 = 6.0 * 3600.0;
