//! Locating the data directories that hold profiles/, hardware/ and overlays/.
