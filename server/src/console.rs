//! The web console at `/admin/` and the embeddable player page at `/{app}/{name}`: plain
//! HTML, CSS and JavaScript from `server/console/` (no build step) and the vendored player
//! libraries, compiled into the binary, so both work offline and without a CDN.
//!
//! The console is static: everything it shows comes from the REST API with the user's
//! token, so it knows nothing the API would not tell. Every answer carries a strict
//! Content-Security-Policy (scripts and styles from this server only, no inline code); the
//! console may not be framed, the player page may (that is its purpose).

use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::auth::Denied;
use crate::hub::HubError;
use crate::server::Context;
use crate::session::Role;

/// Versions of the vendored player libraries (npm packages), also in their file names so
/// browsers may cache them for good. `scripts/test.sh` installs the same versions and a test
/// checks the vendored files are byte for byte the packages' own.
pub const MPEGTS_JS_VERSION: &str = "1.8.2";
pub const HLS_JS_VERSION: &str = "1.7.4";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Named by version: cached for good. Otherwise revalidated by ETag on every use.
    immutable: bool,
}

macro_rules! asset {
    ($name:literal, $type:literal, $path:literal, $immutable:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../console/", $path)),
            immutable: $immutable,
        }
    };
}

/// Files under `/admin/assets/`.
const ASSETS: &[Asset] = &[
    asset!("console.js", "text/javascript; charset=utf-8", "console.js", false),
    asset!("console.css", "text/css; charset=utf-8", "console.css", false),
    asset!("player.js", "text/javascript; charset=utf-8", "player.js", false),
    asset!("player.css", "text/css; charset=utf-8", "player.css", false),
    asset!(
        "mpegts-1.8.2.js",
        "text/javascript; charset=utf-8",
        "vendor/mpegts.js",
        true
    ),
    asset!(
        "hls-1.7.4.min.js",
        "text/javascript; charset=utf-8",
        "vendor/hls.min.js",
        true
    ),
    asset!(
        "mpegts.js.LICENSE.txt",
        "text/plain; charset=utf-8",
        "vendor/mpegts.js.LICENSE",
        true
    ),
    asset!(
        "mpegts.js.bundled-LICENSES.txt",
        "text/plain; charset=utf-8",
        "vendor/mpegts.js.LICENSE.txt",
        true
    ),
    asset!(
        "hls.js.LICENSE.txt",
        "text/plain; charset=utf-8",
        "vendor/hls.js.LICENSE",
        true
    ),
];

const CONSOLE_HTML: &[u8] = include_bytes!("../console/index.html");
const PLAYER_HTML: &[u8] = include_bytes!("../console/player.html");

/// The console's routes: `/admin` (redirect), `/admin/` and `/admin/assets/{file}`.
pub fn router<S: Clone + Send + Sync + 'static>(ctx: Arc<Context>) -> Router<S> {
    Router::new()
        .route("/admin", get(|| async { Redirect::permanent("/admin/") }))
        .route("/admin/", get(console_page))
        .route("/admin/assets/{file}", get(asset))
        .with_state(ctx)
}

/// The Content-Security-Policy of a page. `media`: the origins (beyond this one) its players
/// may fetch from; `frame_ancestors`: who may embed it.
fn csp(media: &[String], frame_ancestors: &str) -> String {
    let media = media.join(" ");
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         media-src 'self' blob: {media}; connect-src 'self' {media}; frame-ancestors {frame_ancestors}; \
         base-uri 'none'; form-action 'none'"
    )
}

/// Headers every console and player response carries.
fn common_headers(h: &mut HeaderMap) {
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Player page URLs may carry a play credential: never pass them on.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
}

fn html(body: &'static [u8], status: StatusCode, csp: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    common_headers(h);
    resp
}

/// `GET /admin/`: the console page. Its players fetch media from the HTTP(S) ports on the
/// host the console was opened with (the API's URLs name that host), which the CSP allows.
async fn console_page(State(ctx): State<Arc<Context>>, headers: HeaderMap) -> Response {
    let mut media = Vec::new();
    if let Some(host) = crate::api::request_host(&headers) {
        let http = ctx.config.http.port;
        media.push(format!("http://{host}:{http}"));
        media.push(format!("ws://{host}:{http}"));
        if ctx.tls_serving() {
            let https = ctx.config.tls.https_port;
            media.push(format!("https://{host}:{https}"));
            media.push(format!("wss://{host}:{https}"));
        }
    }
    let mut resp = html(CONSOLE_HTML, StatusCode::OK, csp(&media, "'none'"));
    resp.headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// The ETag of asset `i`: a content hash (FNV-1a), computed once per asset.
fn etag(i: usize) -> &'static str {
    static TAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for b in a.body {
                    h ^= u64::from(*b);
                    h = h.wrapping_mul(0x0100_0000_01b3);
                }
                format!("\"{h:016x}\"")
            })
            .collect()
    });
    &tags[i]
}

/// `GET /admin/assets/{file}`.
async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == file) else {
        return (StatusCode::NOT_FOUND, "no such console asset\n").into_response();
    };
    let (a, tag) = (&ASSETS[i], etag(i));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        a.body.into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if a.immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    if let Ok(v) = HeaderValue::from_str(tag) {
        h.insert(header::ETAG, v);
    }
    common_headers(h);
    resp
}

/// What a refused player page says; the details stay in the server log.
const REFUSED_HTML: &[u8] = b"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Not allowed</title><link rel=\"stylesheet\" href=\"/admin/assets/player.css\"></head>\
<body><p class=\"message\" role=\"alert\">This stream cannot be played with this link.</p></body></html>";

/// `GET /{app}/{name}`: the player page, once the app's play policy accepts the page's own
/// query string (the credential the page then passes on to the media URLs).
pub async fn player_page(ctx: Arc<Context>, app: &str, name: &str, req: Request) -> Response {
    let key = match ctx.hub.key(app, name) {
        Ok(k) => k,
        Err(HubError::UnknownApp) => return (StatusCode::NOT_FOUND, "unknown app\n").into_response(),
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let query = req.uri().query().unwrap_or("");
    let peer = req
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let media: Vec<String> = crate::api::host_header(req.headers())
        .map(|h| vec![format!("ws://{h}"), format!("wss://{h}")])
        .unwrap_or_default();
    let policy = csp(&media, "*");
    match ctx.authorize(&key, Role::Player, query, peer, 0) {
        Ok(_) => html(PLAYER_HTML, StatusCode::OK, policy),
        Err(d) => {
            let status = if d == Denied::Missing {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::FORBIDDEN
            };
            html(REFUSED_HTML, status, policy)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_with_a_type_and_unique_name() {
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{}", a.name);
            assert_eq!(ASSETS.iter().filter(|b| b.name == a.name).count(), 1, "{}", a.name);
            assert!(a.content_type.contains('/'), "{}", a.name);
        }
        assert!(ASSETS
            .iter()
            .any(|a| a.name == format!("mpegts-{MPEGTS_JS_VERSION}.js")));
        assert!(ASSETS.iter().any(|a| a.name == format!("hls-{HLS_JS_VERSION}.min.js")));
    }

    #[test]
    fn pages_load_only_this_servers_scripts() {
        for page in [CONSOLE_HTML, PLAYER_HTML] {
            let text = std::str::from_utf8(page).unwrap();
            assert!(!text.contains("<script>"), "no inline script (the CSP forbids it)");
            assert!(!text.contains("style=\""), "no inline style (the CSP forbids it)");
            assert!(!text.contains("http://") && !text.contains("https://"), "no CDN");
            for src in text.split("src=\"").skip(1) {
                let src = &src[..src.find('"').unwrap()];
                let file = src.strip_prefix("/admin/assets/").expect(src);
                assert!(ASSETS.iter().any(|a| a.name == file), "{src} is not embedded");
            }
        }
        let policy = csp(&["ws://h:1".into()], "'none'");
        assert!(
            policy.contains("script-src 'self';") && !policy.contains("unsafe"),
            "{policy}"
        );
        assert!(policy.contains("connect-src 'self' ws://h:1;"), "{policy}");
    }

    #[test]
    fn host_headers_with_anything_but_a_host_are_not_echoed() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, v.parse().unwrap());
            crate::api::host_header(&m).map(str::to_string)
        };
        assert_eq!(h("127.0.0.1:8000").as_deref(), Some("127.0.0.1:8000"));
        assert_eq!(h("x; script-src *"), None);
        assert_eq!(h("a b"), None);
    }
}
