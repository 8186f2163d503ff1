//! Static files of the site (wasm, JavaScript, CSS, favicon): from the binary itself when
//! built with the `embed` feature, otherwise from the site directory cargo-leptos writes.
//! A precompressed `.br` or `.gz` twin is served when the client accepts it.

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
    let accepted = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    for (suffix, encoding) in [(".br", "br"), (".gz", "gzip"), ("", "")] {
        if !encoding.is_empty() && !accepts(accepted, encoding) {
            continue;
        }
        if let Some(bytes) = read(&options, &format!("{path}{suffix}")).await {
            return file_response(&path, encoding, bytes);
        }
    }
    not_found()
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

fn file_response(path: &str, encoding: &str, bytes: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    // Asset names carry no content hash, so browsers must revalidate them.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
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
    fn accept_encoding_is_parsed() {
        assert!(accepts("gzip, deflate, br", "br"));
        assert!(accepts("br;q=1.0, gzip;q=0.8", "gzip"));
        assert!(!accepts("gzip, br;q=0", "br"));
        assert!(!accepts("", "gzip"));
        assert!(!accepts("brotli", "br"));
    }
}
