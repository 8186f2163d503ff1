//! The chat room's code, downloaded when the room is first needed rather than with the page.
//!
//! Why: a first visit shows the join form, and the room (the log, the composer, search, the
//! drawers, reactions, editing: two fifths of the wasm) is drawn only once the visitor has
//! joined. In the release build (`cargo xtask build-release`, the `split` feature) the
//! room's views are a wasm module of their own, the `room` split of `wasm_split` (leptos
//! re-exports it), which the xtask cuts out of the wasm: the first visit downloads the
//! join form's code and the client core, and the room's module is fetched when the visitor
//! focuses the join form (and at the latest when the join is sent), so it is usually there
//! before the server's answer is. A page the server draws with the room (a returning
//! visitor's) preloads it beside the main module (`shell`).
//!
//! What is guaranteed: one view in every build. [`RoomCode`] is [`CodeState::Loaded`] from
//! the start wherever the room's code is linked in (the server, `cargo leptos watch`,
//! trunk's client-only build), so the server renders the same view the browser hydrates;
//! a returning visitor's page, which the server renders with the room, waits for the
//! room's module before it hydrates (`frontend`: [`load_before_hydrating`]). A download
//! that fails shows why and a button to try again, and a later try starts afresh
//! (`wasm_split` keeps only successes), or a reload, which is what helps when Banter was
//! updated while the page was open (the server refuses a split module to a page of another
//! build: server/src/assets.rs); nothing the visitor typed or sent is lost, the chat keeps
//! running without the room's views. What is not: that the module is there
//! before the join's answer on a slow connection (the room shows "Opening the room…"
//! until it is).

use leptos::either::EitherOf3;
use leptos::prelude::*;

/// The room's module in the site's package directory: `split_` and the name of the split
/// (`room`, below), as wasm_split_cli_support names it. The server preloads it for pages it
/// draws with the room; the Playwright suite fails if the name changes.
pub const ROOM_MODULE_FILE: &str = "split_room.wasm";

/// Where the room's code is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeState {
    /// Not asked for yet (release build, first visit).
    NotAsked,
    /// Being downloaded.
    Loading,
    /// Linked in or downloaded: the room can be drawn.
    Loaded,
    /// The last download failed.
    Failed,
}

/// The room's code for this page: its state, and the views drawn from it. Provided by the
/// chat page.
#[derive(Clone, Copy)]
pub struct RoomCode {
    state: RwSignal<CodeState>,
}

impl RoomCode {
    pub fn new() -> RoomCode {
        let state = if split::is_loaded() {
            CodeState::Loaded
        } else {
            CodeState::NotAsked
        };
        RoomCode {
            state: RwSignal::new(state),
        }
    }

    /// Starts downloading the room's code, unless it is here or on its way.
    pub fn fetch(self) {
        if !matches!(
            self.state.get_untracked(),
            CodeState::NotAsked | CodeState::Failed
        ) {
            return;
        }
        self.state.set(CodeState::Loading);
        split::load(move |loaded| {
            // The page may have moved on (another room, another chat page): its signal is
            // gone then, and the next page reads `is_loaded` afresh.
            let _ = self.state.try_set(if loaded {
                CodeState::Loaded
            } else {
                CodeState::Failed
            });
        });
    }

    /// The room, once its code is here; until then what is happening.
    pub fn room(self) -> impl IntoView {
        self.fetch();
        move || match self.state.get() {
            CodeState::Loaded => match split::room() {
                Some(room) => EitherOf3::A(room),
                None => EitherOf3::C(self.failed()),
            },
            CodeState::NotAsked | CodeState::Loading => EitherOf3::B(view! {
                <main class="room-code" aria-busy="true">
                    <p role="status">"Opening the room…"</p>
                </main>
            }),
            CodeState::Failed => EitherOf3::C(self.failed()),
        }
    }

    /// The search field of the top bar, once the room's code is here.
    pub fn search_form(self) -> impl IntoView {
        move || {
            (self.state.get() == CodeState::Loaded)
                .then(split::search_form)
                .flatten()
        }
    }

    fn failed(self) -> impl IntoView {
        // Reloading brings the page and its modules of one build: the server refuses a
        // split module to a page of another (an update while the page was open).
        let reload = |_| {
            #[cfg(feature = "browser")]
            let _ = window().location().reload();
        };
        view! {
            <main class="room-code">
                <p role="alert">
                    "The room could not be downloaded. Check the connection and try again,                      or reload the page if Banter was just updated."
                </p>
                <div class="room-code-actions">
                    <button type="button" on:click=move |_| self.fetch()>
                        "Try again"
                    </button>
                    <button type="button" on:click=reload>
                        "Reload the page"
                    </button>
                </div>
            </main>
        }
    }
}

impl Default for RoomCode {
    fn default() -> Self {
        RoomCode::new()
    }
}

/// Whether a page must have the room's code before it hydrates: the server renders the
/// room for a returning visitor (a cookie says so) on a room's page.
#[cfg(feature = "browser")]
pub fn needed_to_hydrate() -> bool {
    let path = leptos::prelude::window()
        .location()
        .pathname()
        .unwrap_or_default();
    matches!(super::route::Page::of(&path), super::route::Page::Room(_))
        && crate::store::returning_in_cookies(&super::document_cookies())
}

/// Downloads the room's code; `done` is told whether it came. For the page's entry point,
/// before hydration (no reactive owner is needed).
#[cfg(feature = "browser")]
pub fn load_before_hydrating(done: impl FnOnce(bool) + 'static) {
    split::load(done)
}

/// The room's views in their own wasm module (`split` feature, release build).
#[cfg(all(feature = "split", target_family = "wasm"))]
mod split {
    use std::future::Future as _;
    use std::pin::pin;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Poll, Waker};

    use leptos::prelude::*;
    use leptos::wasm_split::{wasm_split, SplitLoaderError};

    /// Set once the module is here; never reset (a loaded module stays).
    static LOADED: AtomicBool = AtomicBool::new(false);

    pub fn is_loaded() -> bool {
        LOADED.load(Ordering::Acquire)
    }

    pub fn load(done: impl FnOnce(bool) + 'static) {
        wasm_bindgen_futures::spawn_local(async move {
            // A failure is in the console already (the link module logs it).
            let loaded = load_room_module().await.is_ok();
            if loaded {
                LOADED.store(true, Ordering::Release);
            }
            done(loaded);
        });
    }

    /// The parts of the page the room's module draws. One split function for both: each
    /// split function's preload has a loader of its own, and only this one's is awaited
    /// before hydrating.
    #[repr(u8)]
    enum Part {
        Room,
        SearchForm,
    }

    #[wasm_split(
        room,
        wasm_split_path = ::leptos::wasm_split,
        fallible,
        preload(load_room_module)
    )]
    fn view_of(part: Part) -> Result<AnyView, SplitLoaderError> {
        Ok(match part {
            Part::Room => view! { <super::super::ChatRoom/> }.into_any(),
            Part::SearchForm => view! { <super::super::search::SearchForm/> }.into_any(),
        })
    }

    /// A part's view, once the module is here: then it is ready at the first poll (the
    /// loader's cell is filled; nothing is awaited).
    fn now(part: Part) -> Option<AnyView> {
        if !is_loaded() {
            return None;
        }
        match pin!(view_of(part)).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(view)) => Some(view),
            _ => None,
        }
    }

    pub fn room() -> Option<AnyView> {
        now(Part::Room)
    }

    pub fn search_form() -> Option<AnyView> {
        now(Part::SearchForm)
    }
}

/// The room's views linked in: the server, development and client-only builds.
#[cfg(not(all(feature = "split", target_family = "wasm")))]
mod split {
    use leptos::prelude::*;

    pub fn is_loaded() -> bool {
        true
    }

    #[cfg_attr(not(feature = "browser"), allow(dead_code))]
    pub fn load(done: impl FnOnce(bool) + 'static) {
        done(true)
    }

    pub fn room() -> Option<impl IntoView> {
        Some(view! { <super::super::ChatRoom/> })
    }

    pub fn search_form() -> Option<impl IntoView> {
        Some(view! { <super::super::search::SearchForm/> })
    }
}
