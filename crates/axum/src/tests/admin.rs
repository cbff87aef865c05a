//! Who may press the buttons: with an admin token, cancel and retry need `Authorization:
//! Bearer TOKEN`; without it, or with a wrong one, they answer 401 before the store is called,
//! and nothing changes. Reading stays open.

use super::*;
use crate::{AdminToken, Changes};

const TOKEN: &str = "0123456789abcdef-the-admin-token";

/// A queued job of `app`, stored through its service; its path (`/jobs/{id}`).
async fn queued_job(app: &App) -> String {
    app.measured::<Square>(1e-6);
    let r = call(
        app,
        "POST",
        "/square",
        "respond-async, wait=0",
        r#"{"x": 3}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    r.header("location").to_owned()
}

/// `app`'s routes are now `routes`'s alone (the service's own routes are not needed here).
fn serving(app: &mut App, routes: &JobRoutes) {
    app.router = routes.router();
}

async fn status_of(app: &App, job: &str) -> serde_json::Value {
    let r = call(app, "GET", job, "", "").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "reading needs no token: {}",
        r.body
    );
    r.json()["status"].clone()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn with_a_token_a_change_needs_it_and_a_refused_one_changes_nothing() {
    let mut app = app(64, 100).await;
    let job = queued_job(&app).await;
    let routes =
        JobRoutes::new(app.offload.queue().clone()).admin_token(AdminToken::new(TOKEN).unwrap());
    serving(&mut app, &routes);
    let retry = format!("{job}/retry");
    let wrong = bearer("0123456789abcdef-the-admin-tokeN");
    for (method, path) in [("DELETE", &job), ("POST", &retry)] {
        // No token: 401 with the challenge, in the crate's error shape.
        let r = call_with(&app, method, path, &[], "").await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}: {}",
            r.body
        );
        assert_eq!(r.header("www-authenticate"), "Bearer");
        assert_eq!(r.json()["error"]["code"], "unauthorized");
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("Authorization: Bearer"), "{message}");
        // A wrong token, and a token in another scheme.
        for auth in [wrong.as_str(), "Basic MDEyMzQ1Njc4OWFiY2RlZg==", "Bearer"] {
            let r = call_with(&app, method, path, &[("authorization", auth)], "").await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth}: {}", r.body);
            assert_eq!(r.json()["error"]["code"], "unauthorized");
            assert!(r.header("www-authenticate").starts_with("Bearer"));
        }
        assert_eq!(status_of(&app, &job).await, "queued", "nothing changed");
    }
    assert_eq!(
        r#"Bearer error="invalid_token""#,
        call_with(&app, "DELETE", &job, &[("authorization", &wrong)], "")
            .await
            .header("www-authenticate")
    );
    // One wrong bearer token per route above, and the one just now; the others sent none.
    assert_eq!(routes.wrong_tokens(), 3);
    // Before the id is even read: an unknown or malformed id is a 401 too.
    let r = call_with(&app, "DELETE", "/jobs/nope", &[], "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // The right token, in any case of the scheme.
    let right = bearer(TOKEN);
    let r = call_with(&app, "DELETE", &job, &[("authorization", &right)], "").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.json()["status"], "cancelled");
    let r = call_with(&app, "POST", &retry, &[], "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(status_of(&app, &job).await, "cancelled", "nothing changed");
    let lower = format!("bearer {TOKEN}");
    let r = call_with(&app, "POST", &retry, &[("authorization", &lower)], "").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.json()["status"], "queued");
    // Reading the summary and a list stays open.
    for path in ["/jobs", "/jobs?status=queued"] {
        assert_eq!(call(&app, "GET", path, "", "").await.status, StatusCode::OK);
    }
}

/// Closed: every change is a 401 whatever it carries, and its message says why.
#[tokio::test]
async fn closed_changes_are_refused_with_or_without_a_token() {
    let mut app = app(64, 100).await;
    let job = queued_job(&app).await;
    let routes = JobRoutes::new(app.offload.queue().clone()).changes(Changes::Closed);
    serving(&mut app, &routes);
    for auth in [&[][..], &[("authorization", "Bearer 0123456789abcdef")][..]] {
        let r = call_with(&app, "DELETE", &job, auth, "").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
        assert_eq!(r.header("www-authenticate"), "Bearer");
        let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("no admin token"), "{message}");
    }
    assert_eq!(status_of(&app, &job).await, "queued");
    assert_eq!(routes.wrong_tokens(), 1, "a token was sent once");
}

/// The check comes before any store call: with the store out of reach, a refused change is
/// still a 401, not the 503 a call would give.
#[tokio::test]
async fn a_refused_change_never_calls_the_store() {
    let mut app = app(64, 100).await;
    let job = queued_job(&app).await;
    let reach = offload_queue::Reach::new(app.offload.queue().clone());
    let routes = JobRoutes::new(app.offload.queue().clone())
        .reach(reach.clone())
        .admin_token(AdminToken::new(TOKEN).unwrap());
    serving(&mut app, &routes);
    reach.failed(&offload_queue::QueueError::Timeout(
        "a test",
        Duration::ZERO,
    ));
    let r = call_with(&app, "DELETE", &job, &[], "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let r = call_with(
        &app,
        "DELETE",
        &job,
        &[("authorization", &bearer(TOKEN))],
        "",
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "allowed: the store is called"
    );
}
