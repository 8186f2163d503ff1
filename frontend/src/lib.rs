//! The wasm entry points: `hydrate` for the server-rendered app (cargo-leptos), and the
//! client-only `main` in `main.rs` for trunk.

// Leptos view types nest deeply; hydration code for the chat page needs more depth.
#![recursion_limit = "256"]

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(app::components::App);
}
