//! The page's two routes, `/` (the default room) and `/r/<room>`, and moving between rooms
//! without reloading the page.
//!
//! Why not leptos_router: Banter has two routes and one parameter, and the router cost 12%
//! of the browser's wasm (1,084 KB after wasm-opt with it, 957 KB without): its own code
//! and URL machinery, and every route's view put through `AnyView` (docs/PERFORMANCE.md,
//! "Where the wasm goes").
//!
//! What it guarantees: the server renders a path's page from the same [`Page::of`] the
//! browser hydrates with; in the browser a click on a link to a route (left button, no
//! modifier key, no `target` or `download`, same origin, a different path or query) changes
//! the page in place and adds a history entry, Back and Forward move between them, and a
//! click that a handler already took (`preventDefault`) is left alone. Links anywhere else
//! (another site, a path that is no route, a `#fragment` of this page) are the browser's.
//! What it does not do: keep scroll positions per history entry (the chat keeps its own),
//! or load anything before the new page shows.

use leptos::prelude::*;

use crate::protocol::{validate_room, DEFAULT_ROOM};

/// What a path shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Page {
    /// A room: `/` is the default room, `/r/<room>` any other.
    Room(String),
    /// `/r/<room>` with a name no room can have: why.
    NoSuchRoom(String),
    /// Any other path (the server answers those with 404 before a page is made).
    NotFound,
}

impl Page {
    /// The page a URL path (without query or fragment) shows.
    pub fn of(path: &str) -> Page {
        if path == "/" {
            return Page::Room(DEFAULT_ROOM.to_owned());
        }
        match path.strip_prefix("/r/") {
            Some(room) if !room.is_empty() && !room.contains('/') => match validate_room(room) {
                Ok(()) => Page::Room(room.to_owned()),
                Err(error) => Page::NoSuchRoom(error.message),
            },
            _ => Page::NotFound,
        }
    }
}

/// The path of the request a page is rendered for, which the server provides as context.
#[derive(Clone, Debug)]
pub struct RequestPath(pub String);

/// The current path: the request's on the server, `location.pathname` in the browser,
/// where it follows navigation.
#[derive(Clone, Copy)]
pub struct CurrentPath(RwSignal<String>);

impl CurrentPath {
    /// Starts following the page's path; called once, by the app.
    pub fn provide() -> CurrentPath {
        #[cfg(feature = "browser")]
        let path = browser::pathname();
        #[cfg(not(feature = "browser"))]
        let path = use_context::<RequestPath>()
            .map(|RequestPath(path)| path)
            .unwrap_or_else(|| "/".to_owned());
        let current = CurrentPath(RwSignal::new(path));
        provide_context(current);
        #[cfg(feature = "browser")]
        browser::follow(current);
        current
    }

    pub fn get(self) -> String {
        self.0.get()
    }
}

/// Shows `to` (a path with an optional query) in place of the current page, with a history
/// entry, as following a link there would. Outside the browser it does nothing.
pub fn navigate(to: &str) {
    #[cfg(feature = "browser")]
    if let Some(current) = use_context::<CurrentPath>() {
        browser::push(current, to);
    }
    #[cfg(not(feature = "browser"))]
    let _ = to;
}

#[cfg(feature = "browser")]
mod browser {
    use leptos::prelude::*;
    use leptos::wasm_bindgen::JsCast;
    use leptos::web_sys::{HtmlAnchorElement, MouseEvent};

    use super::{CurrentPath, Page};

    pub(super) fn pathname() -> String {
        window()
            .location()
            .pathname()
            .unwrap_or_else(|_| "/".to_owned())
    }

    /// Back and Forward, and clicks on links to routes. The click listener is added once
    /// the page has hydrated: the view's own click handlers (delegated to the window too)
    /// are added during hydration, so they run first and a link they handle is skipped.
    pub(super) fn follow(current: CurrentPath) {
        let popstate = window_event_listener(leptos::ev::popstate, move |_| {
            current.0.set(pathname());
        });
        Effect::new(move |_| {
            let click = window_event_listener(leptos::ev::click, move |ev| on_click(current, ev));
            on_cleanup(move || click.remove());
        });
        on_cleanup(move || popstate.remove());
    }

    fn on_click(current: CurrentPath, ev: MouseEvent) {
        if ev.default_prevented()
            || ev.button() != 0
            || ev.meta_key()
            || ev.ctrl_key()
            || ev.shift_key()
            || ev.alt_key()
        {
            return;
        }
        let Some(link) = ev
            .target()
            .and_then(|target| target.dyn_into::<leptos::web_sys::Element>().ok())
            .and_then(|element| element.closest("a[href]").ok().flatten())
            .and_then(|element| element.dyn_into::<HtmlAnchorElement>().ok())
        else {
            return;
        };
        if !link.target().is_empty() || link.has_attribute("download") {
            return;
        }
        let location = window().location();
        let (Ok(origin), Ok(here_path), Ok(here_query)) =
            (location.origin(), location.pathname(), location.search())
        else {
            return;
        };
        let (path, query) = (link.pathname(), link.search());
        if link.origin() != origin
            || Page::of(&path) == Page::NotFound
            || (path == here_path && query == here_query)
        {
            return;
        }
        ev.prevent_default();
        push(current, &format!("{path}{query}"));
    }

    pub(super) fn push(current: CurrentPath, to: &str) {
        let pushed = window().history().and_then(|history| {
            history.push_state_with_url(&leptos::wasm_bindgen::JsValue::NULL, "", Some(to))
        });
        if pushed.is_err() {
            // A URL the history refuses: let the browser load it.
            let _ = window().location().set_href(to);
            return;
        }
        window().scroll_to_with_x_and_y(0.0, 0.0);
        current.0.set(pathname());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_pages() {
        assert_eq!(Page::of("/"), Page::Room(DEFAULT_ROOM.to_owned()));
        assert_eq!(Page::of("/r/general"), Page::Room("general".to_owned()));
        assert_eq!(Page::of("/r/dev-ops_2"), Page::Room("dev-ops_2".to_owned()));
        assert!(
            matches!(Page::of("/r/Bad%20Room"), Page::NoSuchRoom(why) if why.contains("lowercase"))
        );
        assert!(matches!(
            Page::of(&format!("/r/{}", "x".repeat(80))),
            Page::NoSuchRoom(_)
        ));
        for other in [
            "",
            "/r/",
            "/r",
            "/r/general/",
            "/r/general/more",
            "/nope",
            "//r/general",
        ] {
            assert_eq!(Page::of(other), Page::NotFound, "{other:?}");
        }
    }
}
