//! The wasm entry points: `hydrate` for the server-rendered app (cargo-leptos), and the
//! client-only `main` in `main.rs` for trunk.

// Leptos view types nest deeply; hydration code for the chat page needs more depth.
#![recursion_limit = "256"]

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    use app::components::{load_room_code, room_code_needed_to_hydrate, App};

    console_error_panic_hook::set_once();
    if !room_code_needed_to_hydrate() {
        leptos::mount::hydrate_body(App);
        return;
    }
    // The server drew the room (a returning visitor): hydrating needs the room's code,
    // which the release build downloads apart (app/src/components/room_code.rs). Without
    // the split it is here and this goes on at once.
    load_room_code(|loaded| {
        if loaded {
            leptos::mount::hydrate_body(App);
        } else {
            // The server's room cannot be hydrated without its code: draw the page afresh,
            // which says what failed and offers to try again.
            if let Some(body) = leptos::prelude::document().body() {
                body.set_inner_html("");
            }
            leptos::mount::mount_to_body(App);
        }
    });
}
