//! Static files of the site (wasm, JavaScript, CSS, favicon): from the binary itself when
//! built with the `embed` feature, otherwise from the site directory cargo-leptos writes.
//! A precompressed `.br` or `.gz` twin is served when the client accepts it.
//!
//! Caching: the shipped binary embeds its site, so the site cannot change while it runs.
//! Its pages ask for the assets under a versioned prefix, `/a/<fingerprint>/pkg/…`, where
//! the fingerprint is a hash of every embedded file; those responses are `immutable` for a
//! year, and a new build has a new fingerprint, hence new URLs. What is guaranteed: a
//! response is cached as immutable only under the fingerprint of the bytes it carries. A
//! page from an older build that asks for its own (now unknown) fingerprint still gets the
//! current files, as `no-cache`, so nothing wrong is ever pinned in a cache. Unversioned
//! paths (`/pkg/banter.wasm`, the favicon) are `no-cache`, and so is everything in a
//! development build, which reads the site from disk while cargo-leptos rewrites it.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use leptos::config::LeptosOptions;

/// Fallback handler: any path no page route claimed.
pub async fn static_files(
    State(options): State<LeptosOptions>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(path) = safe_relative_path(uri.path()) else {
        return not_found();
    };
    let (path, cache) = match path.strip_prefix(VERSIONED_PREFIX) {
        Some(rest) => match rest.split_once('/') {
            Some((version, inner)) if !inner.is_empty() => {
                let current = fingerprint().is_some_and(|current| current == version);
                if !current && !servable_to_another_build(inner) {
                    return not_found();
                }
                let cache = if current { IMMUTABLE } else { REVALIDATE };
                (inner.to_owned(), cache)
            }
            _ => return not_found(),
        },
        None => (path, REVALIDATE),
    };
    let accepted = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    for (suffix, encoding) in [(".br", "br"), (".gz", "gzip"), ("", "")] {
        if !encoding.is_empty() && !accepts(accepted, encoding) {
            continue;
        }
        if let Some(bytes) = read(&options, &format!("{path}{suffix}")).await {
            return file_response(&path, encoding, cache, bytes);
        }
    }
    not_found()
}

/// Whether a page of another build may be answered with this build's file. Not a module
/// split off the wasm (`split_*.wasm`, `chunk_*.wasm`): a page fetches one long after it
/// started (the room's, once the visitor joins), into the memory and function table of
/// the main module it already runs, which this build's module does not fit. Such a
/// request is answered 404, and the page says the room could not be downloaded and offers
/// to reload (app/src/components/room_code.rs), which brings this build whole.
fn servable_to_another_build(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    !(name.ends_with(".wasm") && (name.starts_with("split_") || name.starts_with("chunk_")))
}

/// The first path segment of versioned asset URLs (without slashes).
const VERSIONED_PREFIX: &str = "a/";

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

/// Where pages link the site's assets from: `/a/<fingerprint>` in a build that embeds its
/// site, `""` (the unversioned `/pkg/…`) otherwise.
pub fn asset_root() -> String {
    fingerprint()
        .map(|version| format!("/{VERSIONED_PREFIX}{version}"))
        .unwrap_or_default()
}

/// The URL of the room's wasm module (`app::components::ROOM_MODULE_FILE`), when the site has
/// one: the release build splits it off; development builds link the room in.
pub fn room_module_url(options: &LeptosOptions) -> Option<String> {
    let path = format!(
        "{}/{}",
        options.site_pkg_dir,
        app::components::ROOM_MODULE_FILE
    );
    #[cfg(feature = "embed")]
    let present = Site::get(&path).is_some();
    #[cfg(not(feature = "embed"))]
    let present = std::path::Path::new(options.site_root.as_ref())
        .join(&path)
        .is_file();
    present.then(|| format!("{}/{path}", asset_root()))
}

/// A hash of every embedded file (path and content), computed once: 16 hex digits.
#[cfg(feature = "embed")]
fn fingerprint() -> Option<&'static str> {
    static FINGERPRINT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let version = FINGERPRINT.get_or_init(|| {
        let mut paths: Vec<_> = Site::iter().collect();
        paths.sort();
        let mut hash = Fnv1a::new();
        for path in paths {
            hash.write(path.as_bytes());
            if let Some(file) = Site::get(&path) {
                hash.write(&file.metadata.sha256_hash());
            }
        }
        format!("{:016x}", hash.finish())
    });
    Some(version)
}

/// Development builds read the site from disk, where it changes under a running server.
#[cfg(not(feature = "embed"))]
fn fingerprint() -> Option<&'static str> {
    None
}

/// 64-bit FNV-1a: enough to tell builds apart (the inputs are SHA-256 digests already).
#[cfg(any(feature = "embed", test))]
struct Fnv1a(u64);

#[cfg(any(feature = "embed", test))]
impl Fnv1a {
    fn new() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        self.0 = (self.0 ^ 0xff).wrapping_mul(0x0000_0100_0000_01b3);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not found").into_response()
}

/// The request path without its leading slash, refused if it could leave the site root.
fn safe_relative_path(path: &str) -> Option<String> {
    let relative = path.trim_start_matches('/');
    let safe = !relative.is_empty()
        && relative.split('/').all(|segment| {
            !segment.is_empty() && segment != ".." && segment != "." && !segment.contains('\\')
        });
    safe.then(|| relative.to_owned())
}

fn accepts(accept_encoding: &str, encoding: &str) -> bool {
    accept_encoding.split(',').any(|item| {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
        name.eq_ignore_ascii_case(encoding) && !refused
    })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "ico" => "image/x-icon",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "json" | "webmanifest" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn file_response(path: &str, encoding: &str, cache: &'static str, bytes: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if !encoding.is_empty() {
        headers.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_str(encoding).unwrap_or(HeaderValue::from_static("identity")),
        );
    }
    response
}

#[cfg(feature = "embed")]
#[derive(rust_embed::RustEmbed)]
// Relative to this crate: the site cargo-leptos built (with --precompress) before this.
#[folder = "../target/site"]
struct Site;

#[cfg(feature = "embed")]
async fn read(_options: &LeptosOptions, path: &str) -> Option<Vec<u8>> {
    Site::get(path).map(|file| file.data.into_owned())
}

#[cfg(not(feature = "embed"))]
async fn read(options: &LeptosOptions, path: &str) -> Option<Vec<u8>> {
    let full = std::path::Path::new(options.site_root.as_ref()).join(path);
    tokio::fs::read(full).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_escape_the_site_root() {
        assert_eq!(
            safe_relative_path("/pkg/banter.wasm").as_deref(),
            Some("pkg/banter.wasm")
        );
        for bad in [
            "/",
            "/../etc/passwd",
            "/pkg/../../x",
            "/a//b",
            "/./x",
            "/a\\..\\b",
        ] {
            assert_eq!(safe_relative_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_fingerprint_hash_separates_its_inputs() {
        let of = |parts: &[&[u8]]| {
            let mut hash = Fnv1a::new();
            for part in parts {
                hash.write(part);
            }
            hash.finish()
        };
        assert_ne!(of(&[b"ab", b"c"]), of(&[b"a", b"bc"]));
        assert_ne!(of(&[b"pkg/banter.wasm"]), of(&[b"pkg/banter.wasn"]));
        assert_eq!(of(&[b"x"]), of(&[b"x"]));
    }

    #[test]
    fn a_page_of_another_build_gets_no_split_module() {
        for path in [
            "pkg/banter.wasm",
            "pkg/banter.js",
            "pkg/banter_split.js",
            "favicon.svg",
        ] {
            assert!(servable_to_another_build(path), "{path}");
        }
        for path in ["pkg/split_room.wasm", "pkg/chunk_0.wasm"] {
            assert!(!servable_to_another_build(path), "{path}");
        }
        assert_eq!(
            format!("pkg/{}", app::components::ROOM_MODULE_FILE),
            "pkg/split_room.wasm"
        );
    }

    #[test]
    fn accept_encoding_is_parsed() {
        assert!(accepts("gzip, deflate, br", "br"));
        assert!(accepts("br;q=1.0, gzip;q=0.8", "gzip"));
        assert!(!accepts("gzip, br;q=0", "br"));
        assert!(!accepts("", "gzip"));
        assert!(!accepts("brotli", "br"));
    }
}
