//! Reference data and names: the provider's market descriptions and
//! fixtures, and the market and outcome names rendered from them.
//!
//! - [`descriptions`]: `markets.xml` and variant descriptions →
//!   [`Descriptions`] (name templates, outcomes, specifiers, `groups`).
//! - [`render`]: [`Renderer`]: market and outcome names from templates,
//!   specifiers, [`Competitors`] and [`Profiles`], with readable fallbacks.
//! - [`fixture`]: `fixture.xml` → [`Fixture`] (competitors, tournament,
//!   sport, scheduled start).
//!
//! Pure and sans-IO: every parser takes the response text, every query is
//! a lookup. Fetching, caching and the hot path are the callers'; this
//! module depends on nothing else in the crate (lowest layer in
//! `layers.rs`).

pub mod descriptions;
pub mod fixture;
pub mod render;
mod xml;

pub use descriptions::{Descriptions, Market, Outcome, Specifier, Variant};
pub use fixture::{Competitor, Fixture, Qualifier};
pub use render::{Competitors, NoProfiles, Profiles, Renderer, TemplateError};
pub use xml::DataError;

#[cfg(test)]
mod tests;
