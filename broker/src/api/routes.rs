//! The API's routes, registered through one table, so that what the router serves can be
//! compared with what the OpenAPI document lists (a test in `openapi` does, both ways).

use axum::handler::Handler;
use axum::routing::{delete, get, post, put};
use axum::Router;

use super::AppState;

/// A router together with the (method, path) of every route it serves.
#[derive(Default)]
pub struct Routes {
    router: Router<AppState>,
    table: Vec<(&'static str, &'static str)>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("table", &self.table)
            .finish()
    }
}

impl Routes {
    pub fn new() -> Routes {
        Routes::default()
    }

    pub fn get<H, T>(mut self, path: &'static str, handler: H) -> Routes
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.router = self.router.route(path, get(handler));
        self.table.push(("get", path));
        self
    }

    pub fn post<H, T>(mut self, path: &'static str, handler: H) -> Routes
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.router = self.router.route(path, post(handler));
        self.table.push(("post", path));
        self
    }

    pub fn put<H, T>(mut self, path: &'static str, handler: H) -> Routes
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.router = self.router.route(path, put(handler));
        self.table.push(("put", path));
        self
    }

    pub fn delete<H, T>(mut self, path: &'static str, handler: H) -> Routes
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        self.router = self.router.route(path, delete(handler));
        self.table.push(("delete", path));
        self
    }

    pub fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// Every (method, path) served, methods in lower case.
    pub fn table(&self) -> &[(&'static str, &'static str)] {
        &self.table
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}
