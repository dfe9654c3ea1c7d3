//! The live odds page in a real headless Chromium (skipped without one).
