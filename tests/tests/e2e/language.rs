//! Error messages in the reader's language (`Accept-Language`), against a real broker: the
//! same refusal in English and in Chinese, with the same code and status; extractor
//! rejections in the API's shape; ingest receipts' per-record messages in Chinese.

use broker::config::{Config, LimitsSection};
use e2e_tests::{TestApp, GRID, STREET};
use serde_json::{json, Value};

/// (status, Content-Language, body) of a request built by `build` with `language` (if any).
async fn ask(
    build: impl Fn() -> reqwest::RequestBuilder,
    language: Option<&str>,
) -> (u16, String, Value) {
    let mut request = build();
    if let Some(language) = language {
        request = request.header("accept-language", language);
    }
    let response = request.send().await.expect("the request is sent");
    let status = response.status().as_u16();
    let content_language = response
        .headers()
        .get("content-language")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.json().await.expect("a JSON error body");
    (status, content_language, body)
}

fn has_chinese(text: &str) -> bool {
    text.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
}

/// Asks the same request in English (no header, `en`) and in Chinese (`zh-CN`, a q-weighted
/// list): the same status and code every time, the message in the language asked for.
async fn same_answer_both_ways(
    build: impl Fn() -> reqwest::RequestBuilder,
    status: u16,
    code: &str,
) -> (String, String) {
    let (plain_status, plain_language, plain) = ask(&build, None).await;
    assert_eq!(
        (plain_status, plain["error"]["code"].as_str()),
        (status, Some(code)),
        "{plain}"
    );
    let english = plain["error"]["message"]
        .as_str()
        .expect("a message")
        .to_owned();
    assert!(!has_chinese(&english), "English by default: {english}");
    assert_eq!(plain_language, "en");

    let (en_status, _, en) = ask(&build, Some("en")).await;
    assert_eq!(
        (en_status, &en),
        (status, &plain),
        "`en` is the default answer"
    );

    let (zh_status, zh_language, zh) = ask(&build, Some("zh-CN")).await;
    assert_eq!(
        (zh_status, zh["error"]["code"].as_str()),
        (status, Some(code)),
        "{zh}"
    );
    let chinese = zh["error"]["message"]
        .as_str()
        .expect("a message")
        .to_owned();
    assert!(has_chinese(&chinese), "Chinese for zh-CN: {chinese}");
    assert_eq!(zh_language, "zh-CN");
    assert_eq!(
        zh.as_object().map(|o| o.len()),
        Some(1),
        "the same shape: {zh}"
    );

    let (weighted_status, _, weighted) = ask(&build, Some("en;q=0.5, zh;q=0.9")).await;
    assert_eq!(weighted_status, status);
    assert_eq!(weighted, zh, "zh weighs more than en");
    (english, chinese)
}

#[tokio::test]
async fn refusals_answer_in_english_or_chinese_with_the_same_code_and_status() {
    let app = TestApp::spawn().await;
    let url = app.url.clone();
    let client = app.client.clone();

    // 401: no token.
    let (english, chinese) = same_answer_both_ways(
        || client.get(format!("{url}/v1/whoami")),
        401,
        "unauthenticated",
    )
    .await;
    assert!(english.contains("token"), "{english}");
    assert!(chinese.contains("令牌"), "{chinese}");

    // 404: no such route (the router's fallback).
    same_answer_both_ways(
        || client.get(format!("{url}/v1/no-such-route")),
        404,
        "route_not_found",
    )
    .await;

    // 404: no such record, for a reader.
    let officer = app.token("street_officer", &[STREET], None);
    same_answer_both_ways(
        || {
            client
                .get(format!("{url}/v1/residents/r_00000000000000000000"))
                .bearer_auth(&officer)
                .header("x-purpose", "routine_visit")
        },
        404,
        "not_found",
    )
    .await;

    // 400: a refusal (audited) of a personal-data read without a purpose.
    let (_, chinese) = same_answer_both_ways(
        || {
            client
                .get(format!("{url}/v1/residents/r_00000000000000000000"))
                .bearer_auth(&officer)
        },
        400,
        "purpose_required",
    )
    .await;
    assert!(chinese.contains("X-Purpose"), "{chinese}");

    // 403: a publisher publishing for another department.
    let publisher = app.publisher("gongan");
    same_answer_both_ways(
        || {
            client
                .post(format!("{url}/v1/ingest/minzheng"))
                .bearer_auth(&publisher)
                .body("{}\n")
        },
        403,
        "department_mismatch",
    )
    .await;

    // 400: axum's JSON rejection, in the API's shape.
    let (english, _) = same_answer_both_ways(
        || {
            client
                .post(format!("{url}/v1/resolution/split"))
                .bearer_auth(&officer)
                .header("x-purpose", "routine_visit")
                .header("content-type", "application/json")
                .body("{not json")
        },
        400,
        "body_invalid",
    )
    .await;
    assert!(english.contains("JSON"), "axum's reason is kept: {english}");

    // 405: a route that does not serve the method.
    same_answer_both_ways(
        || client.delete(format!("{url}/v1/whoami")),
        405,
        "method_not_allowed",
    )
    .await;

    // Not Chinese: Traditional-only, another language, or English weighted higher.
    for language in ["zh-TW", "fr", "zh;q=0.4, en;q=0.5"] {
        let (status, content_language, body) =
            ask(|| client.get(format!("{url}/v1/whoami")), Some(language)).await;
        assert_eq!(status, 401);
        assert_eq!(content_language, "en", "{language}");
        assert!(
            !has_chinese(body["error"]["message"].as_str().unwrap()),
            "{language}: {body}"
        );
    }
}

#[tokio::test]
async fn the_rate_limit_refusal_is_in_chinese_with_its_retry_after() {
    let app = TestApp::spawn_with(Config {
        limits: LimitsSection {
            rate_per_second: 1,
            rate_burst: 2,
            ..LimitsSection::default()
        },
        ..Config::default()
    })
    .await;
    let token = app.token("grid_worker", &[GRID], None);
    let mut limited = None;
    for _ in 0..20 {
        let response = app
            .client
            .get(format!("{}/v1/whoami", app.url))
            .bearer_auth(&token)
            .header("accept-language", "zh-CN,zh;q=0.9,en;q=0.8")
            .send()
            .await
            .expect("sent");
        if response.status().as_u16() == 429 {
            limited = Some(response);
            break;
        }
    }
    let response = limited.expect("20 requests at once pass a burst of 2");
    assert!(
        response.headers().get("retry-after").is_some(),
        "Retry-After kept"
    );
    assert_eq!(response.headers()["content-language"], "zh-CN");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("Retry-After") && has_chinese(message),
        "{message}"
    );
}

#[tokio::test]
async fn ingest_receipts_carry_chinese_messages_for_rejected_records() {
    let app = TestApp::spawn().await;
    let batch = format!(
        "{}\n{}\n",
        json!({"kind":"event","source_id":"WG-1","version":"1","type":"dispute",
            "title":"楼道堆物","grid":GRID,"status":"reported"}),
        json!({"kind":"event","source_id":"WG-2","version":"1","type":"dispute",
            "title":"楼道堆物","grid":GRID,"status":"reported","no_such_field":"x"}),
    );
    let publisher = app.publisher("wangge");
    let response = app
        .client
        .post(format!("{}/v1/ingest/wangge", app.url))
        .bearer_auth(&publisher)
        .header("content-type", "application/x-ndjson")
        .header("accept-language", "zh-CN")
        .body(batch)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-language"], "zh-CN");
    let chinese: Value = response.json().await.expect("json");
    assert_eq!(chinese["accepted"], 1, "{chinese}");
    assert_eq!(chinese["rejected"][0]["code"], "field_unknown", "{chinese}");
    let message = chinese["rejected"][0]["message"].as_str().unwrap();
    assert!(has_chinese(message), "{chinese}");

    // The stored receipt: English without the header, Chinese with it; same facts.
    let batch_id = chinese["batch_id"].as_str().expect("a batch id");
    let stored = |language: Option<&'static str>| {
        let mut request = app
            .client
            .get(format!("{}/v1/ingest/wangge/batches/{batch_id}", app.url))
            .bearer_auth(&publisher);
        if let Some(language) = language {
            request = request.header("accept-language", language);
        }
        async move {
            let response = request.send().await.expect("sent");
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.expect("json")
        }
    };
    let english = stored(None).await;
    assert_eq!(english["rejected"][0]["code"], "field_unknown", "{english}");
    assert_eq!(
        english["rejected"][0]["line"],
        chinese["rejected"][0]["line"]
    );
    assert_eq!(
        english["rejected"][0]["field"],
        chinese["rejected"][0]["field"]
    );
    assert!(
        !has_chinese(english["rejected"][0]["message"].as_str().unwrap()),
        "{english}"
    );
    let again = stored(Some("zh")).await;
    assert_eq!(again["rejected"][0]["message"], message, "{again}");
}
