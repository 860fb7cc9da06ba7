//! The embedded log benchmark (`cmdr bench log`). To be written.
