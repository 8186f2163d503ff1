//! Cuts the code a first visit does not run out of the release wasm, into modules the
//! page downloads when it needs them.
//!
//! Why: the front end's largest part, the chat room's views, is drawn only after a
//! visitor has joined (`app/src/components/room_code.rs`). The app marks it with
//! `wasm_split` (re-exported by leptos, as its `#[lazy]` uses it): a split function is
//! called through an import that names its split, and a preload import fetches the
//! module. This step is the one cargo-leptos runs with `--split`: the `wasm_split_cli_support`
//! crate reads the wasm (linked with `--emit-relocs`, so that it can move code between
//! modules), puts what only a split's functions reach into that split's module
//! (`split_<name>.wasm`), what several splits share into `chunk_<n>.wasm`, and writes a
//! small JS module (the link module) that fetches and instantiates them on the preload's
//! call, sharing the main module's memory and function table.
//!
//! What is guaranteed: the build fails when the wasm has no split point (built without the
//! app's `split` feature, or without `--emit-relocs`), rather than shipping a front end
//! whose split imports lead nowhere. What is not: anything about sizes; the xtask reports
//! each module's, and the first visit's budget covers the main module, the wasm-bindgen JS,
//! the link module and the CSS.

use std::path::{Path, PathBuf};

use wasm_split_cli_support::{transform, Options};

/// The link module's file name, next to the wasm-bindgen JS; the wasm imports the split
/// loaders from it.
pub fn link_module_name(output_name: &str) -> String {
    format!("{output_name}_split.js")
}

/// What [`split`] made.
pub struct Split {
    /// The main module, for wasm-bindgen.
    pub main: Vec<u8>,
    /// The split modules and shared chunks it wrote into the package directory.
    pub modules: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("splitting the wasm: {0}")]
    Transform(String),
    #[error("reading the split's main module: {0}")]
    Read(std::io::Error),
    #[error(
        "the wasm has no split point: the front end was built without the app's `split` \
         feature or without `-C link-arg=--emit-relocs` (xtask/src/split.rs)"
    )]
    NothingSplit,
}

/// Splits `wasm`: the split modules and the link module go into `pkg` (the site's
/// package directory), the main module into `scratch` and back to the caller.
/// `output_name` is the wasm-bindgen JS's name, from which the link module imports the
/// main module's exports.
pub fn split(
    wasm: &[u8],
    pkg: &Path,
    scratch: &Path,
    output_name: &str,
) -> Result<Split, SplitError> {
    let main_path = scratch.join(format!("{output_name}_split_main.wasm"));
    let main_module = format!("./{output_name}.js");
    let link_name = format!("./{}", link_module_name(output_name));
    let mut options = Options::new(wasm);
    options.output_dir = pkg;
    options.main_out_path = &main_path;
    options.main_module = &main_module;
    options.link_name = &link_name;
    let made = transform(options).map_err(|e| SplitError::Transform(format!("{e:?}")))?;
    if made.split_modules.is_empty() {
        return Err(SplitError::NothingSplit);
    }
    let main = std::fs::read(&main_path).map_err(SplitError::Read)?;
    let _ = std::fs::remove_file(&main_path);
    Ok(Split {
        main,
        modules: made.split_modules,
    })
}
