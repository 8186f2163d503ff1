//! Banter's build program, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! `build-release` makes what `cargo leptos build --release --precompress --bin-features
//! embed` made, without cargo-leptos: the front end compiled to wasm with the
//! `wasm-release` profile and the app's `split` feature, cut in two (src/split.rs: the
//! room's views in a module of their own, as `cargo leptos --split` does), wasm-bindgen
//! (as a library, at the Cargo.lock version), the async hydration path taken out
//! (src/async_hydration.rs), wasm-opt (npm's binaryen, from PATH), the CSS and JS without
//! comments or indentation (src/css.rs, src/js.rs), the assets, a `.br` and a `.gz` twin of
//! every file, all in `target/site`; then `target/release/banter` with the `embed` feature, which
//! bakes `target/site` into the binary. The names and layout come from
//! `[[workspace.metadata.leptos]]` in the workspace Cargo.toml, as for cargo-leptos, so
//! `cargo leptos watch` and this build agree.
//!
//! The embedded site is never half-written: the site is assembled in a private directory
//! (`target/front/site`) and published to `target/site` only when complete, by one rename
//! when `target/site` does not exist yet. On a first build the server's dependencies are
//! compiled at the same time as the wasm (another target directory, so neither waits for
//! cargo's lock); that build stops at the `server` crate itself, whose `RustEmbed` derive
//! refuses a missing folder, and the server is compiled once the site is in place.

use std::collections::BTreeMap;
use std::env;
use std::ffi::OsString;
use std::fs;
use std::hash::Hasher;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Instant, SystemTime};

mod async_hydration;
mod css;
mod js;
mod split;

type Result<T> = std::result::Result<T, String>;

const USAGE: &str = "\
Usage: cargo xtask <command> [options]

Commands:
  build-release   target/site (wasm, JS, CSS, assets, .br/.gz twins), then
                  target/release/banter with the site embedded
  site            only target/site
  help            this text

Options (build-release):
  --serial        build the server's dependencies after the site instead of beside
                  the wasm (for comparing build times)

wasm-opt is taken from PATH (scripts/run puts npm's binaryen there).";

/// Bumped whenever the site pipeline changes, so an old site is rebuilt.
const PIPELINE_VERSION: &str = "7";

/// The app's feature that puts the room's views in a wasm module of their own
/// (src/split.rs, app/src/components/room_code.rs).
const SPLIT_FEATURE: &str = "split";

/// The stamp file in the private site directory: the key of the inputs it was built from.
const STAMP: &str = ".xtask-stamp";
/// The most a first visit may download, brotli-compressed wasm, JS and CSS together, in
/// bytes: a guard against creep, set just above today's size; the aim is 200 KB
/// (docs/PERFORMANCE.md). Raised from 350 KB (337 KB used on 2026-12-02) on 2026-12-03,
/// when message formatting, day dividers and the composer's counter took it to 353 KB,
/// then to 370 KB the same day, when the "N new messages" button, Leave's confirmation
/// and the join form's hydration fixes took it to 365 KB; then to 390 KB on 2026-12-03,
/// when the phone drawer, the "new since you left" line, the other rooms' links under the
/// join form, "Retry now" with its countdown and the name field's error wiring took it to
/// 386 KB; then to 405 KB the same day, when @-autocompletion in the composer, the
/// marked words in search results, desktop notifications for mentions and the mention
/// counts took it to 403 KB, and to 408 KB when relative message times took it to 405 KB.
/// Lowered to 340 KB on 2026-12-05, when taking tachys's async hydration path out of the
/// wasm (src/async_hydration.rs) brought the first visit to 337 KB; to 303 KB the same day,
/// when two routes of Banter's own in place of leptos_router brought it to 300 KB; to
/// 293 KB when the browser left the writing-system rules for names to the server (290 KB);
/// to 201 KB on 2026-12-06, when the room's views became a wasm module of their own that
/// the page fetches once the visitor starts joining (src/split.rs), and the served CSS and
/// JS lost their comments and indentation (src/css.rs, src/js.rs): 200.5 KB, counting the
/// main module, the wasm-bindgen JS, the split's link module and the CSS; to 200 KB, the
/// aim itself, when the tab's title was set without leptos_meta (198.2 KB).
/// Where the bytes go, and what would bring them down: docs/PERFORMANCE.md, "Where the
/// wasm goes".
const FIRST_VISIT_BUDGET: u64 = 200_000;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build-release") => {
            let mut serial = false;
            for arg in &args[1..] {
                match arg.as_str() {
                    "--serial" => serial = true,
                    other => return usage_error(&format!("unknown option {other:?}")),
                }
            }
            Build::new().and_then(|build| build.release(serial))
        }
        Some("site") if args.len() == 1 => Build::new().and_then(|build| {
            let site = build.front()?;
            build.publish(&site).map(|_| ())
        }),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => return usage_error(&format!("unknown command {other:?}")),
        None => return usage_error("no command"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\x1b[1;31m[xtask] error:\x1b[0m {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("[xtask] {message}\n\n{USAGE}");
    ExitCode::from(2)
}

fn log(message: impl AsRef<str>) {
    eprintln!("\x1b[1m[xtask]\x1b[0m {}", message.as_ref());
}

/// `[[workspace.metadata.leptos]]`: the keys this build reads.
struct Leptos {
    output_name: String,
    site_root: String,
    site_pkg_dir: String,
    style_file: String,
    assets_dir: String,
    site_addr: String,
    reload_port: String,
    lib_package: String,
    lib_features: Vec<String>,
    lib_default_features: bool,
    lib_profile_release: String,
    bin_package: String,
    bin_target: String,
    bin_features: Vec<String>,
    bin_default_features: bool,
}

impl Leptos {
    /// Reads the first `[[workspace.metadata.leptos]]` table of the workspace Cargo.toml.
    /// Only what that table uses is understood: `key = "string"`, `key = true|false` and
    /// `key = ["string", ...]` on one line each.
    fn read(manifest: &Path) -> Result<Leptos> {
        let text = fs::read_to_string(manifest)
            .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
        let mut values = BTreeMap::new();
        let mut inside = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                if inside {
                    break;
                }
                inside = line == "[[workspace.metadata.leptos]]";
                continue;
            }
            if !inside || line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                values.insert(key.trim().to_owned(), value.trim().to_owned());
            }
        }
        if values.is_empty() {
            return Err(format!(
                "no [[workspace.metadata.leptos]] table in {}",
                manifest.display()
            ));
        }
        let string = |key: &str, default: Option<&str>| -> Result<String> {
            match values.get(key) {
                Some(v) => {
                    unquote(v).ok_or_else(|| format!("leptos metadata {key}: not a string: {v}"))
                }
                None => default
                    .map(str::to_owned)
                    .ok_or_else(|| format!("leptos metadata: {key} is missing")),
            }
        };
        let list = |key: &str| -> Result<Vec<String>> {
            let Some(v) = values.get(key) else {
                return Ok(Vec::new());
            };
            let inner = v
                .strip_prefix('[')
                .and_then(|v| v.strip_suffix(']'))
                .ok_or_else(|| format!("leptos metadata {key}: not a one-line list: {v}"))?;
            inner
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| unquote(s).ok_or_else(|| format!("leptos metadata {key}: {s}")))
                .collect()
        };
        let boolean = |key: &str, default: bool| -> Result<bool> {
            match values.get(key).map(String::as_str) {
                None => Ok(default),
                Some("true") => Ok(true),
                Some("false") => Ok(false),
                Some(v) => Err(format!("leptos metadata {key}: not a boolean: {v}")),
            }
        };
        Ok(Leptos {
            output_name: string("output-name", None)?,
            site_root: string("site-root", Some("target/site"))?,
            site_pkg_dir: string("site-pkg-dir", Some("pkg"))?,
            style_file: string("style-file", None)?,
            assets_dir: string("assets-dir", None)?,
            site_addr: string("site-addr", Some("127.0.0.1:3000"))?,
            reload_port: values.get("reload-port").cloned().unwrap_or("3001".into()),
            lib_package: string("lib-package", None)?,
            lib_features: list("lib-features")?,
            lib_default_features: boolean("lib-default-features", true)?,
            lib_profile_release: string("lib-profile-release", Some("release"))?,
            bin_package: string("bin-package", None)?,
            bin_target: string("bin-target", None)?,
            bin_features: list("bin-features")?,
            bin_default_features: boolean("bin-default-features", true)?,
        })
    }
}

fn unquote(value: &str) -> Option<String> {
    let value = value.split(" #").next().unwrap_or(value).trim();
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .map(str::to_owned)
}

struct Build {
    root: PathBuf,
    /// Cargo's target directory (CARGO_TARGET_DIR, or `target/`).
    target: PathBuf,
    leptos: Leptos,
    cargo: OsString,
}

impl Build {
    fn new() -> Result<Build> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or("xtask has no parent directory")?
            .to_path_buf();
        let leptos = Leptos::read(&root.join("Cargo.toml"))?;
        let target = match env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => root.join(dir),
            None => root.join("target"),
        };
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        Ok(Build {
            root,
            target,
            leptos,
            cargo,
        })
    }

    /// The site the server embeds (`site-root`, relative to the workspace; the server's
    /// `RustEmbed` folder points there whatever the target directory is).
    fn site_dir(&self) -> PathBuf {
        self.root.join(&self.leptos.site_root)
    }

    /// cargo-leptos's own target directory for the front end; shared with it.
    fn front_target(&self) -> PathBuf {
        self.target.join("front")
    }

    /// Where the release site is assembled and kept, with its stamp.
    fn built_site(&self) -> PathBuf {
        self.front_target().join("site")
    }

    fn logs(&self) -> PathBuf {
        self.target.join("xtask-logs")
    }

    /// The environment cargo-leptos gives both builds. leptos reads LEPTOS_OUTPUT_NAME at
    /// compile time (`option_env!`): with it the page asks for `/pkg/banter.wasm`, without
    /// it for `banter_bg.wasm`. LEPTOS_WATCH, also read at compile time, must not leak in
    /// from a shell that runs `cargo leptos watch`.
    fn cargo_command(&self) -> Command {
        let l = &self.leptos;
        let mut cmd = Command::new(&self.cargo);
        cmd.current_dir(&self.root)
            .env("LEPTOS_OUTPUT_NAME", &l.output_name)
            .env("LEPTOS_SITE_ROOT", &l.site_root)
            .env("LEPTOS_SITE_PKG_DIR", &l.site_pkg_dir)
            .env("LEPTOS_SITE_ADDR", &l.site_addr)
            .env("LEPTOS_RELOAD_PORT", &l.reload_port)
            .env("LEPTOS_LIB_DIR", &l.lib_package)
            .env("LEPTOS_BIN_DIR", &l.bin_package)
            .env("LEPTOS_JS_MINIFY", "false")
            .env("LEPTOS_HASH_FILES", "false")
            .env_remove("LEPTOS_WATCH");
        cmd
    }

    fn server_command(&self) -> Command {
        let l = &self.leptos;
        let mut cmd = self.cargo_command();
        cmd.args(["build", "--release"])
            .arg(format!("--package={}", l.bin_package))
            .arg(format!("--bin={}", l.bin_target));
        if !l.bin_default_features {
            cmd.arg("--no-default-features");
        }
        let mut features = l.bin_features.clone();
        if !features.iter().any(|f| f == "embed") {
            features.push("embed".into());
        }
        cmd.arg(format!("--features={}", features.join(",")));
        cmd
    }

    fn release(&self, serial: bool) -> Result<()> {
        let started = Instant::now();
        check_wasm_bindgen_version(&self.root)?;
        let site = self.site_dir();
        // A site that is not this build's last output (missing, or written by `cargo leptos
        // watch`) changes the embed anyway: with none in place, the server's dependencies
        // can be compiled beside the wasm, and the `server` crate waits for the real site.
        let ours = dir_equals(&self.built_site(), &site, &[STAMP])?;
        if site.exists() && !ours {
            log(format!(
                "{} is not this build's output (cargo leptos watch?): replacing it",
                site.display()
            ));
            fs::remove_dir_all(&site).map_err(|e| format!("removing {}: {e}", site.display()))?;
        }
        let mut deps = None;
        if !site.exists() && !serial {
            fs::create_dir_all(self.logs()).map_err(|e| e.to_string())?;
            let log_path = self.logs().join("server-dependencies.log");
            let out = fs::File::create(&log_path).map_err(|e| e.to_string())?;
            let err = out.try_clone().map_err(|e| e.to_string())?;
            log(format!(
                "compiling the server's dependencies beside the wasm (log: {})",
                log_path.display()
            ));
            let child = self
                .server_command()
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err))
                .spawn()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            deps = Some((child, Instant::now()));
        }
        let front = self.front().and_then(|built| self.publish(&built));
        if let Err(e) = front {
            if let Some((mut child, _)) = deps {
                let _ = child.kill();
                let _ = child.wait();
            }
            return Err(e);
        }
        if let Some((child, since)) = deps {
            wait_dependencies(child, since)?;
        }
        let step = Instant::now();
        log("server, with the site embedded");
        run(self.server_command(), "the server build")?;
        let binary = self.target.join("release").join(&self.leptos.bin_target);
        let size = fs::metadata(&binary).map(|m| m.len()).unwrap_or(0);
        log(format!(
            "server {:.1} s; {} ({:.1} MB) ready after {:.1} s",
            step.elapsed().as_secs_f64(),
            binary.display(),
            size as f64 / 1e6,
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Builds the release site in `target/front/site`, unless it is already built from the
    /// same inputs; returns its directory.
    fn front(&self) -> Result<PathBuf> {
        let l = &self.leptos;
        let step = Instant::now();
        let mut cmd = self.cargo_command();
        // `cargo rustc`, so that the link argument the split needs (relocations kept in the
        // wasm) reaches only the final link and the dependencies' builds stay as they are.
        cmd.arg("rustc")
            .arg(format!("--package={}", l.lib_package))
            .arg("--lib")
            .arg(format!("--target-dir={}", self.front_target().display()))
            .arg("--target=wasm32-unknown-unknown");
        if !l.lib_default_features {
            cmd.arg("--no-default-features");
        }
        let mut features = l.lib_features.clone();
        features.push(SPLIT_FEATURE.to_owned());
        cmd.arg(format!("--features={}", features.join(",")));
        cmd.arg(format!("--profile={}", l.lib_profile_release));
        cmd.args(["--", "-C", "link-arg=--emit-relocs"]);
        log(format!("wasm ({} profile)", l.lib_profile_release));
        run(cmd, "the wasm build")?;
        let profile_dir = match l.lib_profile_release.as_str() {
            "dev" => "debug",
            other => other,
        };
        let wasm = self
            .front_target()
            .join("wasm32-unknown-unknown")
            .join(profile_dir)
            .join(format!("{}.wasm", l.lib_package.replace('-', "_")));
        let wasm_bytes =
            fs::read(&wasm).map_err(|e| format!("cannot read {}: {e}", wasm.display()))?;
        log(format!("wasm {:.1} s", step.elapsed().as_secs_f64()));

        let wasm_opt = find_wasm_opt()?;
        let style = self.root.join(&l.style_file);
        let style_bytes =
            fs::read(&style).map_err(|e| format!("cannot read {}: {e}", style.display()))?;
        let assets = self.root.join(&l.assets_dir);
        let asset_files = list_files(&assets)?;

        let mut key = std::hash::DefaultHasher::new();
        key.write(PIPELINE_VERSION.as_bytes());
        key.write(wasm_opt.version.as_bytes());
        key.write(l.output_name.as_bytes());
        key.write(l.site_pkg_dir.as_bytes());
        key.write(&wasm_bytes);
        key.write(&style_bytes);
        for rel in &asset_files {
            key.write(rel.to_string_lossy().as_bytes());
            key.write(&fs::read(assets.join(rel)).map_err(|e| e.to_string())?);
        }
        let key = format!("{:016x}\n", key.finish());

        let built = self.built_site();
        if fs::read_to_string(built.join(STAMP)).ok().as_deref() == Some(key.as_str()) {
            log("site unchanged");
            return Ok(built);
        }

        let step = Instant::now();
        let tmp = self.front_target().join("site.tmp");
        remove_if_exists(&tmp)?;
        let pkg = tmp.join(&l.site_pkg_dir);
        fs::create_dir_all(&pkg).map_err(|e| e.to_string())?;

        let split = split::split(&wasm_bytes, &pkg, &self.front_target(), &l.output_name)
            .map_err(|e| e.to_string())?;
        drop(wasm_bytes);
        log(format!(
            "split: {} modules apart from the main one ({:.1} s)",
            split.modules.len(),
            step.elapsed().as_secs_f64()
        ));

        let step = Instant::now();
        // As the wasm-bindgen CLI does by default (cargo-leptos runs it with
        // `--target=web --out-name=<output-name>`, and with a split `--keep-lld-exports
        // --no-demangle`: the split modules call the main module's functions through the
        // exports the linker made); input given as bytes takes its name as the output's.
        wasm_bindgen_cli_support::Bindgen::new()
            .input_bytes(&l.output_name, split.main)
            .web(true)
            .map_err(|e| format!("wasm-bindgen: {e:#}"))?
            .typescript(true)
            .omit_default_module_path(false)
            .keep_lld_exports(true)
            .demangle(false)
            .generate(&pkg)
            .map_err(|e| format!("wasm-bindgen: {e:#}"))?;
        // Leptos' HydrationScripts asks for <output-name>.wasm, as cargo-leptos names it.
        let wasm_out = pkg.join(format!("{}.wasm", l.output_name));
        fs::rename(pkg.join(format!("{}_bg.wasm", l.output_name)), &wasm_out)
            .map_err(|e| format!("renaming the bindgen output: {e}"))?;
        log(format!(
            "wasm-bindgen {:.1} s",
            step.elapsed().as_secs_f64()
        ));

        let step = Instant::now();
        let mut module = walrus::Module::from_file(&wasm_out)
            .map_err(|e| format!("reading the wasm-bindgen output: {e:#}"))?;
        let split_off = split
            .modules
            .iter()
            .map(|path| {
                walrus::Module::from_file(path)
                    .map_err(|e| format!("reading {}: {e:#}", path.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        let stripped =
            async_hydration::strip(&mut module, &split_off).map_err(|e| e.to_string())?;
        // The split modules' own views have their async twins too; the main module calls
        // into them through the table as they call into it.
        let main = std::slice::from_ref(&module);
        let mut split_stripped = 0;
        for (mut split_module, path) in split_off.into_iter().zip(&split.modules) {
            split_stripped += match async_hydration::strip(&mut split_module, main) {
                Ok(stripped) => stripped.functions,
                Err(async_hydration::StripError::NothingToStrip) => 0,
                Err(e) => return Err(e.to_string()),
            };
            split_module
                .emit_wasm_file(path)
                .map_err(|e| format!("writing {}: {e:#}", path.display()))?;
        }
        module
            .emit_wasm_file(&wasm_out)
            .map_err(|e| format!("writing the wasm: {e:#}"))?;
        log(format!(
            "async hydration path removed: {} functions, {} instructions ({} functions kept \
             for the split modules' calls), and {split_stripped} functions of the split \
             modules ({:.1} s)",
            stripped.functions,
            stripped.instructions,
            stripped.called_from_split,
            step.elapsed().as_secs_f64()
        ));

        let step = Instant::now();
        for module in std::iter::once(&wasm_out).chain(&split.modules) {
            let mut opt = Command::new(&wasm_opt.path);
            // cargo-leptos's flags for a release build, and: the first kilobyte of memory is
            // never used (Rust's stack grows down from 1 MiB towards it), so constant
            // offsets may fold into loads and stores (1.3 KB of the compressed main module
            // on 2026-12-06); no producers or target-features sections.
            opt.args([
                "-Oz",
                "--enable-bulk-memory",
                "--enable-nontrapping-float-to-int",
                "--low-memory-unused",
                "--strip-producers",
                "--strip-target-features",
                "--converge",
            ])
            .arg(module)
            .arg("-o")
            .arg(module);
            run(opt, "wasm-opt")?;
        }
        let sizes: Vec<String> = std::iter::once(&wasm_out)
            .chain(&split.modules)
            .map(|module| {
                format!(
                    "{} {:.0} KB",
                    module.file_name().unwrap_or_default().to_string_lossy(),
                    fs::metadata(module).map(|m| m.len()).unwrap_or(0) as f64 / 1e3
                )
            })
            .collect();
        log(format!(
            "wasm-opt {:.1} s ({})",
            step.elapsed().as_secs_f64(),
            sizes.join(", ")
        ));

        // The style file without its comments and indentation (src/css.rs; cargo-leptos
        // minifies it with lightningcss), no bundling.
        let style = String::from_utf8(style_bytes)
            .map_err(|_| format!("{} is not UTF-8", style.display()))?;
        fs::write(
            pkg.join(format!("{}.css", l.output_name)),
            css::minify(&style),
        )
        .map_err(|e| e.to_string())?;
        for rel in &asset_files {
            let to = tmp.join(rel);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            fs::copy(assets.join(rel), &to).map_err(|e| format!("copying an asset: {e}"))?;
        }

        for name in [
            format!("{}.js", l.output_name),
            split::link_module_name(&l.output_name),
        ] {
            let path = pkg.join(&name);
            let js = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            match js::minify(&js) {
                Some(minified) => fs::write(&path, minified).map_err(|e| e.to_string())?,
                None => log(format!(
                    "{name} left as it is: a template literal spans lines"
                )),
            }
        }

        let step = Instant::now();
        for rel in list_files(&tmp)? {
            let name = rel.to_string_lossy();
            if name.ends_with(".br") || name.ends_with(".gz") {
                continue;
            }
            precompress(&tmp.join(&rel))?;
        }
        log(format!(
            "precompression {:.1} s",
            step.elapsed().as_secs_f64()
        ));
        // What a first visit downloads, compressed as it is served.
        // The main module, its JS, the split's link module (the JS imports it) and the
        // style sheet; not the split modules, which the room fetches.
        let first_visit = [
            format!("{}.wasm", l.output_name),
            format!("{}.js", l.output_name),
            split::link_module_name(&l.output_name),
            format!("{}.css", l.output_name),
        ]
        .iter()
        .map(|file| {
            let path = pkg.join(format!("{file}.br"));
            fs::metadata(&path)
                .map(|m| m.len())
                .map_err(|e| format!("{}: {e}", path.display()))
        })
        .sum::<Result<u64>>()?;
        log(format!(
            "first visit: {} KB of brotli-compressed wasm, JS and CSS (budget {} KB)",
            first_visit / 1000,
            FIRST_VISIT_BUDGET / 1000
        ));
        if first_visit > FIRST_VISIT_BUDGET {
            return Err(format!(
                "the first visit grew to {first_visit} bytes, over the budget of {FIRST_VISIT_BUDGET}: \
                 find what the wasm carries that the page does not need (twiggy top), or raise \
                 FIRST_VISIT_BUDGET in xtask/src/main.rs with a reason"
            ));
        }

        fs::write(tmp.join(STAMP), &key).map_err(|e| e.to_string())?;
        remove_if_exists(&built)?;
        fs::rename(&tmp, &built).map_err(|e| format!("moving the site into place: {e}"))?;
        Ok(built)
    }

    /// Makes `target/site` hold exactly the files of `built`. A missing site appears at
    /// once, complete, by a rename; an existing one has only its changed files replaced,
    /// so the server is not recompiled when nothing changed. Returns whether anything
    /// changed.
    fn publish(&self, built: &Path) -> Result<bool> {
        let site = self.site_dir();
        if !site.exists() {
            let tmp = site.with_extension("new");
            remove_if_exists(&tmp)?;
            copy_tree(built, &tmp, &[STAMP])?;
            fs::rename(&tmp, &site).map_err(|e| format!("publishing the site: {e}"))?;
            log(format!("site published to {}", site.display()));
            return Ok(true);
        }
        let want = list_files(built)?;
        let have = list_files(&site)?;
        let mut changed = false;
        let mut added = false;
        for rel in want.iter().filter(|rel| *rel != Path::new(STAMP)) {
            let from = built.join(rel);
            let to = site.join(rel);
            let new = fs::read(&from).map_err(|e| e.to_string())?;
            if fs::read(&to).ok().as_deref() == Some(new.as_slice()) {
                continue;
            }
            added |= !to.exists();
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            let part = to.with_extension("xtask-part");
            fs::write(&part, &new).map_err(|e| e.to_string())?;
            fs::rename(&part, &to).map_err(|e| e.to_string())?;
            changed = true;
        }
        for rel in have.iter().filter(|rel| !want.contains(rel)) {
            fs::remove_file(site.join(rel)).map_err(|e| e.to_string())?;
            changed = true;
        }
        if added {
            // RustEmbed reads the folder's listing when the server compiles, and cargo
            // tracks the files it embedded, not the listing: a new file needs a recompile.
            touch_embedding_sources(&self.root.join(&self.leptos.bin_package).join("src"))?;
        }
        if changed {
            log(format!("site updated in {}", site.display()));
        }
        Ok(changed)
    }
}

/// The lock file pins wasm-bindgen and this build's wasm-bindgen-cli-support; they must be
/// the same version (cargo enforces it through wasm-bindgen-shared, this says it plainly).
fn check_wasm_bindgen_version(root: &Path) -> Result<()> {
    let lock = fs::read_to_string(root.join("Cargo.lock")).map_err(|e| e.to_string())?;
    let version_of = |name: &str| {
        let marker = format!("name = \"{name}\"\nversion = \"");
        lock.find(&marker).and_then(|at| {
            let rest = &lock[at + marker.len()..];
            rest.split('"').next().map(str::to_owned)
        })
    };
    let (Some(crate_version), Some(support)) = (
        version_of("wasm-bindgen"),
        version_of("wasm-bindgen-cli-support"),
    ) else {
        return Err("Cargo.lock names no wasm-bindgen or wasm-bindgen-cli-support".into());
    };
    if crate_version != support {
        return Err(format!(
            "Cargo.lock has wasm-bindgen {crate_version} but wasm-bindgen-cli-support {support}: \
             set xtask/Cargo.toml's wasm-bindgen-cli-support to \"={crate_version}\""
        ));
    }
    Ok(())
}

struct WasmOpt {
    path: PathBuf,
    version: String,
}

/// wasm-opt from PATH, refusing binaryen releases older than 116: Debian's 108 produces a
/// wasm whose page throws `WebAssembly.Table.set(): Argument 1 is invalid` and never
/// hydrates.
fn find_wasm_opt() -> Result<WasmOpt> {
    let path = env::var_os("PATH")
        .map(|paths| env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("wasm-opt"))
        .find(|p| p.is_file())
        .ok_or("wasm-opt is not on PATH: scripts/run installs npm's binaryen and puts it there")?;
    let output = Command::new(&path)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let number: u32 = version
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .ok_or_else(|| format!("{} --version printed {version:?}", path.display()))?;
    if number < 116 {
        return Err(format!(
            "{} is binaryen {number}, which breaks the wasm (Debian's?); \
             scripts/run installs npm's binaryen",
            path.display()
        ));
    }
    Ok(WasmOpt { path, version })
}

/// Waits for the server-dependency build started beside the wasm. It is expected to stop at
/// the `server` crate when the site was not in place yet; anything else it found, the
/// server build that follows reports again.
fn wait_dependencies(mut child: Child, since: Instant) -> Result<()> {
    if matches!(child.try_wait(), Ok(None)) {
        log("waiting for the server's dependencies");
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    log(format!(
        "server dependencies {} after {:.1} s",
        if status.success() {
            "and server done"
        } else {
            "done"
        },
        since.elapsed().as_secs_f64()
    ));
    Ok(())
}

fn run(mut cmd: Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {what} ({:?}): {e}", cmd.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

fn precompress(path: &Path) -> Result<()> {
    let data = fs::read(path).map_err(|e| e.to_string())?;
    let name = path.as_os_str().to_owned();

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&data).map_err(|e| e.to_string())?;
    let gz = gz.finish().map_err(|e| e.to_string())?;
    let mut gz_path = name.clone();
    gz_path.push(".gz");
    fs::write(gz_path, gz).map_err(|e| e.to_string())?;

    // Quality 11, window 22: as cargo-leptos.
    let mut br = Vec::new();
    let params = brotli::enc::BrotliEncoderParams::default();
    brotli::BrotliCompress(&mut data.as_slice(), &mut br, &params).map_err(|e| e.to_string())?;
    let mut br_path = name;
    br_path.push(".br");
    fs::write(br_path, br).map_err(|e| e.to_string())?;
    Ok(())
}

/// Every file under `dir`, relative to it, sorted; empty if `dir` does not exist.
fn list_files(dir: &Path) -> Result<Vec<PathBuf>> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                walk(base, &path, out)?;
            } else {
                out.push(path.strip_prefix(base).unwrap_or(&path).to_path_buf());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out).map_err(|e| format!("listing {}: {e}", dir.display()))?;
    }
    out.sort();
    Ok(out)
}

/// Whether both directories exist and hold the same files with the same bytes, ignoring
/// the names in `skip` (top level).
fn dir_equals(a: &Path, b: &Path, skip: &[&str]) -> Result<bool> {
    if !a.exists() || !b.exists() {
        return Ok(false);
    }
    let keep = |rel: &PathBuf| !skip.iter().any(|s| rel == Path::new(s));
    let left: Vec<_> = list_files(a)?.into_iter().filter(keep).collect();
    let right: Vec<_> = list_files(b)?.into_iter().filter(keep).collect();
    if left != right {
        return Ok(false);
    }
    for rel in &left {
        if fs::read(a.join(rel)).ok() != fs::read(b.join(rel)).ok() {
            return Ok(false);
        }
    }
    Ok(true)
}

fn copy_tree(from: &Path, to: &Path, skip: &[&str]) -> Result<()> {
    for rel in list_files(from)? {
        if skip.iter().any(|s| rel == Path::new(s)) {
            continue;
        }
        let dest = to.join(&rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        fs::copy(from.join(&rel), &dest).map_err(|e| format!("copying the site: {e}"))?;
    }
    Ok(())
}

fn remove_if_exists(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", dir.display())),
    }
}

/// Sets the modification time of the sources that derive `RustEmbed` to now, so cargo
/// compiles them again (their content is untouched).
fn touch_embedding_sources(src: &Path) -> Result<()> {
    for rel in list_files(src)? {
        let path = src.join(&rel);
        if path.extension().is_some_and(|e| e == "rs")
            && fs::read_to_string(&path).is_ok_and(|s| s.contains("RustEmbed"))
        {
            let file = fs::File::options()
                .append(true)
                .open(&path)
                .map_err(|e| e.to_string())?;
            file.set_modified(SystemTime::now())
                .map_err(|e| e.to_string())?;
            log(format!(
                "new site files: {} will be recompiled",
                path.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_workspace_leptos_metadata() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let l = Leptos::read(&root.join("Cargo.toml")).unwrap();
        assert_eq!(l.output_name, "banter");
        assert_eq!(l.site_root, "target/site");
        assert_eq!(l.site_pkg_dir, "pkg");
        assert_eq!(l.lib_package, "frontend");
        assert_eq!(l.lib_features, ["hydrate"]);
        assert!(!l.lib_default_features);
        assert_eq!(l.lib_profile_release, "wasm-release");
        assert_eq!(
            (l.bin_package.as_str(), l.bin_target.as_str()),
            ("server", "banter")
        );
        assert!(l.bin_features.is_empty());
        assert!(root.join(&l.style_file).is_file());
        assert!(root.join(&l.assets_dir).is_dir());
    }

    #[test]
    fn the_lock_file_pairs_wasm_bindgen_with_its_bindgen_library() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        check_wasm_bindgen_version(root).unwrap();
    }

    #[test]
    fn unquotes_strings_with_trailing_comments() {
        assert_eq!(unquote("\"pkg\"").as_deref(), Some("pkg"));
        assert_eq!(unquote("\"pkg\" # where").as_deref(), Some("pkg"));
        assert_eq!(unquote("pkg"), None);
    }
}
