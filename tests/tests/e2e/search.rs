//! Search end to end: what a grid worker types finds the right resident, house or event;
//! nothing outside the caller's view is found or counted; the index on disk holds no
//! personal data; the index follows ingest, tombstones and restarts.

use std::time::{Duration, Instant};

use e2e_tests::id;
use e2e_tests::{contains_bytes, files_under, hit_ids, TestApp, GRID, OTHER_GRID, STREET};
use serde_json::{json, Value};

fn line(value: Value) -> String {
    format!("{value}\n")
}

const ADDRESS: &str = "北京市朝阳区望京街道幸福里小区3号楼2单元501";

struct World {
    zhang_san: String,
    zhang_san_id: String,
}

async fn publish(app: &TestApp) -> World {
    let zhang_san_id = id("11010519491231002");
    app.ingest(
        "zhujian",
        line(json!({"kind":"house","source_id":"ZJ-55","version":"1","address":ADDRESS,"grid":GRID,"usage":"own"})),
    )
    .await;
    let residents = [
        json!({"kind":"resident","source_id":"GA-1","version":"1","id_number":zhang_san_id,"name":"张三",
            "phone":"13812345678","address":ADDRESS,"house_source_id":"ZJ-55","grid":GRID}),
        json!({"kind":"resident","source_id":"GA-2","version":"1","id_number":id("11010519800101001"),"name":"张三丰",
            "phone":"13900001111","address":"北京市朝阳区望京街道阳光嘉园7号楼1单元302","grid":GRID}),
        json!({"kind":"resident","source_id":"GA-3","version":"1","id_number":id("11010519700202003"),"name":"单田芳",
            "address":"北京市朝阳区望京街道阳光嘉园7号楼1单元101","grid":GRID}),
        json!({"kind":"resident","source_id":"GA-4","version":"1","id_number":id("11010519650303004"),"name":"李四",
            "phone":"13700002222","address":"北京市朝阳区望京街道南湖东园1号楼1单元101","grid":OTHER_GRID}),
    ];
    app.ingest(
        "gongan",
        residents
            .iter()
            .map(|r| line(r.clone()))
            .collect::<String>(),
    )
    .await;
    // Known only to the health department: a grid worker may not learn that it exists.
    app.ingest(
        "weijian",
        line(json!({"kind":"resident","source_id":"WJ-9","version":"1","id_number":id("11010519550505005"),
            "name":"王秀英","grid":GRID,"tags":["慢性病"]})),
    )
    .await;
    app.ingest(
        "wangge",
        line(
            json!({"kind":"event","source_id":"WG-1","version":"1","type":"ebike_charging",
            "title":"幸福里小区3号楼2单元电动自行车违规充电",
            "description":"网格员巡查发现楼道内有电动自行车飞线充电，存在火灾隐患，已现场劝导。",
            "occurred_at":"2026-11-21T09:30:00+08:00","address":ADDRESS,"grid":GRID,"status":"open",
            "house_source_id":"ZJ-55","party_id_numbers":[zhang_san_id]}),
        ),
    )
    .await;
    let zhang_san = app.unified_id("resident", "gongan", "GA-1").await;
    World {
        zhang_san,
        zhang_san_id,
    }
}

/// GET a search endpoint; returns (status, body).
async fn search(
    app: &TestApp,
    path: &str,
    params: &[(&str, &str)],
    token: &str,
    purpose: &str,
) -> (u16, Value) {
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let response = app
        .client
        .get(format!("{}{path}?{}", app.url, query.join("&")))
        .bearer_auth(token)
        .header("x-purpose", purpose)
        .send()
        .await
        .expect("the search request is sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Percent-encodes a query-string value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Waits until `q` finds something for `token` (the index follows the store asynchronously).
async fn wait_for(app: &TestApp, path: &str, q: &str, token: &str) -> Duration {
    let started = Instant::now();
    loop {
        let (status, body) = search(app, path, &[("q", q)], token, "routine_visit").await;
        if status == 200 && body["total"].as_u64().unwrap_or(0) > 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{q} never became searchable: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_worker_finds_residents_the_way_they_type() {
    let app = TestApp::spawn().await;
    let world = publish(&app).await;
    let officer = app.token("street_officer", &[STREET], None);
    let fresh = wait_for(&app, "/v1/residents", "张三", &officer).await;
    assert!(fresh < Duration::from_secs(3), "indexing took {fresh:?}");

    for q in [
        "张三",
        "張三",
        "zhangsan",
        "zs",
        "zhangs",
        "zangsan",
        "ZhangSan",
        "002X",
        "5678",
        "13812345678",
        "138-1234-5678",
        "幸福里小区3号楼",
        "3号楼2单元",
        "幸福里 501",
    ] {
        let (status, body) = search(
            &app,
            "/v1/residents",
            &[("q", q)],
            &officer,
            "routine_visit",
        )
        .await;
        assert_eq!(status, 200, "{q}: {body}");
        assert!(
            hit_ids(&body).contains(&world.zhang_san),
            "{q} did not find 张三: {body}"
        );
    }
    // Exact characters rank above a longer name that only starts with them, pinyin too.
    for q in ["张三", "zhangsan"] {
        let (_, body) = search(
            &app,
            "/v1/residents",
            &[("q", q)],
            &officer,
            "routine_visit",
        )
        .await;
        assert_eq!(
            hit_ids(&body).first(),
            Some(&world.zhang_san),
            "{q}: {body}"
        );
        assert!(
            body["items"].as_array().is_some_and(|i| i.len() >= 2),
            "{q} should also find 张三丰: {body}"
        );
    }
    // A surname read the surname way.
    let (_, body) = search(
        &app,
        "/v1/residents",
        &[("q", "shantianfang")],
        &officer,
        "routine_visit",
    )
    .await;
    assert_eq!(body["total"], 1, "{body}");
    // Fuzzy matching never applies to Chinese characters: 张山 is not 张三.
    let (_, body) = search(
        &app,
        "/v1/residents",
        &[("q", "张山")],
        &officer,
        "routine_visit",
    )
    .await;
    assert_eq!(body["total"], 0, "{body}");
    // Summaries come from the masked profile.
    let (_, body) = search(
        &app,
        "/v1/residents",
        &[("q", "张三")],
        &officer,
        "routine_visit",
    )
    .await;
    let summary = &body["items"][0]["summary"];
    assert_eq!(summary["name"], "张三", "{body}");
    assert!(
        !body.to_string().contains(&world.zhang_san_id),
        "an ID number in clear: {body}"
    );

    // The house and its occupants by address; events by words, filters and time.
    let (_, houses) = search(
        &app,
        "/v1/houses",
        &[("q", "3号楼2单元")],
        &officer,
        "routine_visit",
    )
    .await;
    assert_eq!(houses["total"], 1, "{houses}");
    let (_, events) = search(
        &app,
        "/v1/events",
        &[("q", "电动车 充电")],
        &officer,
        "routine_visit",
    )
    .await;
    assert_eq!(events["total"], 1, "{events}");
    let (_, events) = search(
        &app,
        "/v1/events",
        &[
            ("type", "ebike_charging"),
            ("status", "open"),
            ("from", "2026-11-01"),
            ("sort", "time"),
        ],
        &officer,
        "routine_visit",
    )
    .await;
    assert_eq!(events["total"], 1, "{events}");
    let (_, events) = search(
        &app,
        "/v1/events",
        &[("q", "充电"), ("status", "closed")],
        &officer,
        "routine_visit",
    )
    .await;
    assert_eq!(events["total"], 0, "{events}");
    let (_, all) = search(
        &app,
        "/v1/search",
        &[("q", "幸福里 3号楼")],
        &officer,
        "routine_visit",
    )
    .await;
    let kinds: Vec<&str> = all["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["kind"].as_str())
        .collect();
    for kind in ["resident", "house", "event"] {
        assert!(kinds.contains(&kind), "{kind} missing: {all}");
    }
}

#[tokio::test]
async fn nothing_outside_the_view_is_found_or_counted() {
    let app = TestApp::spawn().await;
    let world = publish(&app).await;
    let officer = app.token("street_officer", &[STREET], None);
    wait_for(&app, "/v1/residents", "李四", &officer).await;
    wait_for(&app, "/v1/residents", "王秀英", &officer).await;
    let worker = app.token("grid_worker", &[GRID], None);
    let random = search(
        &app,
        "/v1/residents",
        &[("q", "随机不存在的人")],
        &worker,
        "routine_visit",
    )
    .await;
    assert_eq!(random.0, 200);
    let random_total = random.1["total"].clone();
    assert_eq!(random_total, 0);
    let masked_id = format!(
        "{}********{}",
        &world.zhang_san_id[..6],
        &world.zhang_san_id[14..]
    );
    let last6 = &world.zhang_san_id[12..];
    for (label, q) in [
        ("out-of-grid resident by name", "李四"),
        ("out-of-grid resident by pinyin", "lisi"),
        ("out-of-grid resident by phone suffix", "2222"),
        ("a resident only the health department holds", "王秀英"),
        ("a health tag", "慢性病"),
        ("a masked ID number", masked_id.as_str()),
        ("six ID digits while IDs are masked", last6),
        (
            "a full ID number while IDs are masked",
            world.zhang_san_id.as_str(),
        ),
    ] {
        let (status, body) =
            search(&app, "/v1/residents", &[("q", q)], &worker, "routine_visit").await;
        assert_eq!(status, 200, "{label}: {body}");
        assert_eq!(
            body["total"], random_total,
            "{label} ({q}) was counted: {body}"
        );
        assert_eq!(hit_ids(&body), Vec::<String>::new(), "{label}");
        let (_, all) = search(&app, "/v1/search", &[("q", q)], &worker, "routine_visit").await;
        assert_eq!(all["total"], random_total, "{label} via /v1/search: {all}");
    }
    // The same worker does find what is theirs, by what the mask still shows.
    let (_, body) = search(
        &app,
        "/v1/residents",
        &[("q", "002X")],
        &worker,
        "routine_visit",
    )
    .await;
    assert_eq!(hit_ids(&body), vec![world.zhang_san.clone()], "{body}");
    // The street officer investigating a case sees IDs in clear, and may search by them.
    let (_, body) = search(
        &app,
        "/v1/residents",
        &[("q", last6)],
        &officer,
        "case_investigation",
    )
    .await;
    assert_eq!(hit_ids(&body), vec![world.zhang_san.clone()], "{body}");
}

#[tokio::test]
async fn pages_are_bound_to_their_query_and_every_search_is_audited() {
    let app = TestApp::spawn().await;
    publish(&app).await;
    let officer = app.token("street_officer", &[STREET], None);
    wait_for(&app, "/v1/residents", "zhang", &officer).await;
    let (status, first) = search(
        &app,
        "/v1/residents",
        &[("q", "zhang"), ("limit", "1")],
        &officer,
        "routine_visit",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(first["total"], 2, "{first}");
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, second) = search(
        &app,
        "/v1/residents",
        &[("q", "zhang"), ("limit", "1"), ("cursor", &cursor)],
        &officer,
        "routine_visit",
    )
    .await;
    assert_eq!(hit_ids(&second).len(), 1);
    assert_ne!(hit_ids(&first), hit_ids(&second));
    assert!(second.get("next_cursor").is_none(), "{second}");
    let (status, body) = search(
        &app,
        "/v1/residents",
        &[("q", "li"), ("limit", "1"), ("cursor", &cursor)],
        &officer,
        "routine_visit",
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("cursor_mismatch"))
    );
    let (status, body) = search(
        &app,
        "/v1/residents",
        &[("limit", "500")],
        &officer,
        "routine_visit",
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("limit_invalid"))
    );
    // No purpose, no search.
    let response = app
        .client
        .get(format!("{}/v1/residents?q=zhang", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 400);

    let mut app = app;
    app.stop().await;
    let audited = files_under(&app.data_dir.join("audit"))
        .iter()
        .filter_map(|f| std::fs::read(f).ok())
        .any(|bytes| contains_bytes(&bytes, b"\"action\":\"search\""));
    assert!(audited, "no audit record with action search");
}

#[tokio::test]
async fn the_index_on_disk_holds_no_personal_data() {
    let mut app = TestApp::spawn().await;
    let world = publish(&app).await;
    let officer = app.token("street_officer", &[STREET], None);
    wait_for(&app, "/v1/events", "充电", &officer).await;
    wait_for(&app, "/v1/residents", "王秀英", &officer).await;
    app.stop().await;
    let index_dir = app.data_dir.join("index");
    let files = files_under(&index_dir);
    assert!(
        files.len() > 3,
        "no index files under {}",
        index_dir.display()
    );
    let needles: Vec<String> = vec![
        "张三".into(),
        "单田芳".into(),
        "王秀英".into(),
        "zhangsan".into(),
        "shantianfang".into(),
        world.zhang_san_id.clone(),
        world.zhang_san_id[12..].to_owned(),
        "13812345678".into(),
        "幸福里".into(),
        "望京街道".into(),
        "3号楼".into(),
        "电动自行车".into(),
        "飞线充电".into(),
        "慢性病".into(),
    ];
    for file in files {
        let bytes = std::fs::read(&file).expect("readable index file");
        for needle in &needles {
            assert!(
                !contains_bytes(&bytes, needle.as_bytes()),
                "{needle} in {}",
                file.display()
            );
        }
    }
}

#[tokio::test]
async fn the_index_follows_updates_tombstones_restarts_and_reindex() {
    let app = TestApp::spawn().await;
    let world = publish(&app).await;
    let officer = app.token("street_officer", &[STREET], None);
    wait_for(&app, "/v1/residents", "zhangsanfeng", &officer).await;
    // A tombstone removes the resident from search.
    app.ingest(
        "gongan",
        line(json!({"kind":"resident","source_id":"GA-2","version":"2","deleted":true})),
    )
    .await;
    let started = Instant::now();
    loop {
        let (_, body) = search(
            &app,
            "/v1/residents",
            &[("q", "zhangsanfeng")],
            &officer,
            "routine_visit",
        )
        .await;
        if body["total"] == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the tombstone never reached the index: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A restart resumes; later ingest is followed.
    let app = app.restart().await;
    let (_, body) = search(
        &app,
        "/v1/residents",
        &[("q", "张三")],
        &officer,
        "routine_visit",
    )
    .await;
    assert!(hit_ids(&body).contains(&world.zhang_san), "{body}");
    app.ingest(
        "gongan",
        line(json!({"kind":"resident","source_id":"GA-7","version":"1","id_number":id("11010519900707007"),
            "name":"欧阳娜娜","grid":GRID})),
    )
    .await;
    wait_for(&app, "/v1/residents", "oynn", &officer).await;
    // An offline rebuild gives the same answers.
    let mut app = app;
    app.stop().await;
    let count = search::reindex_store(
        std::sync::Arc::new(app.open_store()),
        &app.data_dir,
        None,
        &vault::progress::Silent,
    )
    .expect("reindex");
    assert!(count >= 6, "{count}");
    let app = app.restart().await;
    for q in ["oynn", "张三", "3号楼2单元"] {
        let (_, body) = search(
            &app,
            "/v1/residents",
            &[("q", q)],
            &officer,
            "routine_visit",
        )
        .await;
        assert!(
            body["total"].as_u64().unwrap_or(0) > 0,
            "{q} after reindex: {body}"
        );
    }
    let (_, body) = search(
        &app,
        "/v1/residents",
        &[("q", "zhangsanfeng")],
        &officer,
        "routine_visit",
    )
    .await;
    assert_eq!(body["total"], 0, "{body}");
}

#[tokio::test]
async fn while_the_index_is_rebuilt_searches_wait_rather_than_answer_from_part_of_it() {
    const RESIDENTS: usize = 1_500;
    let app = TestApp::spawn().await;
    let body: String = (0..RESIDENTS)
        .map(|n| {
            // 17 digits: area, 1980, month 01 or 02, day 01, a sequence number.
            let first17 = format!("1101051980{:02}01{:03}", 1 + n / 900, 100 + n % 900);
            line(
                json!({"kind":"resident","source_id":format!("GA-{n}"),"version":"1",
                "id_number":id(&first17),"name":format!("王{}", ["明","丽","强","芳"][n % 4]),
                "address":format!("北京市朝阳区望京街道幸福里小区{}号楼", n % 20 + 1),"grid":GRID}),
            )
        })
        .collect();
    assert_eq!(app.ingest("gongan", body).await["accepted"], RESIDENTS);
    let officer = app.token("street_officer", &[STREET], None);
    let all = [("q", "幸福里小区")];
    let started = Instant::now();
    loop {
        let (_, body) = search(&app, "/v1/residents", &all, &officer, "routine_visit").await;
        if body["total"].as_u64() == Some(RESIDENTS as u64) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the residents never became searchable: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An index of another schema version is wiped and rebuilt from the store at the next start.
    std::fs::write(
        app.data_dir.join("index").join("safegrid-index-version"),
        "schema=0 key=0\n",
    )
    .expect("the index version file");
    let app = app.restart_unready().await;
    let (status, body) = app.get("/readyz", &officer, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("search_index_building")),
        "a broker rebuilding its index is not ready: {body}"
    );
    let mut refused = 0;
    let started = Instant::now();
    let answer = loop {
        let response = app
            .client
            .get(format!(
                "{}/v1/residents?q={}",
                app.url,
                encode("幸福里小区")
            ))
            .bearer_auth(&officer)
            .header("x-purpose", "routine_visit")
            .send()
            .await
            .expect("the search request is sent");
        if response.status() != 503 {
            assert_eq!(response.status(), 200);
            break response.json::<Value>().await.expect("a search page");
        }
        assert!(
            response.headers().contains_key("retry-after"),
            "503 tells the client when to try again"
        );
        let body: Value = response.json().await.expect("an error body");
        assert_eq!(body["error"]["code"], "search_index_building", "{body}");
        refused += 1;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the rebuild never finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(refused > 0, "the first searches met the rebuild");
    assert_eq!(
        answer["total"], RESIDENTS,
        "the first answer after the rebuild counts every resident"
    );
    let (status, _) = app.get("/readyz", &officer, None).await;
    assert_eq!(status, 200);
}

/// Names whose pinyin readings are not plain ASCII (欸 ê, 嗯 ń/ň/ǹ, 呣 ḿ) once made the
/// search follower panic on every pass: nothing published afterwards was searchable, and
/// `/readyz` still said ready. Now they index like any name, and so does what comes after.
#[tokio::test]
async fn names_with_non_ascii_readings_never_stop_the_index() {
    let app = TestApp::spawn().await;
    let odd = ["李欸", "王嗯", "张呣", "欧阳嗯欸"];
    let mut body = String::new();
    for (i, name) in odd.iter().enumerate() {
        let first17 = format!("1101051980010{}{:03}", 1 + i, i);
        let check = model::id_number_check_digit(&first17).expect("17 digits");
        body.push_str(&format!(
            "{}\n",
            serde_json::json!({"kind":"resident","source_id":format!("GA-ODD-{i}"),"version":"1",
                "id_number":format!("{first17}{check}"),"name":name,"grid":e2e_tests::GRID})
        ));
    }
    app.ingest("gongan", body).await;
    // And a batch of names drawn from every CJK block, combining marks, astral planes and
    // control characters (a fixed-seed generator: the same names every run).
    let ranges: [(u32, u32); 8] = [
        (0x4E00, 0x9FFF),
        (0x3400, 0x4DBF),
        (0x20000, 0x2A6DF),
        (0xF900, 0xFAFF),
        (0x2E80, 0x2FDF),
        (0x0300, 0x036F),
        (0x1F300, 0x1FAFF),
        (0xFF00, 0xFFEF),
    ];
    let mut seed: u64 = 0x5afe_9e1d;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as u32
    };
    let mut body = String::new();
    for i in 0..200usize {
        let len = 1 + next() as usize % 6;
        let name: String = (0..len)
            .filter_map(|_| {
                let (lo, hi) = ranges[next() as usize % ranges.len()];
                char::from_u32(lo + next() % (hi - lo + 1))
            })
            .collect();
        let first17 = format!(
            "110105197{}{:02}{:02}{:03}",
            i % 10,
            1 + i % 12,
            1 + i % 28,
            i
        );
        let check = model::id_number_check_digit(&first17).expect("17 digits");
        body.push_str(&format!(
            "{}\n",
            serde_json::json!({"kind":"resident","source_id":format!("GA-RND-{i}"),"version":"1",
                "id_number":format!("{first17}{check}"),"name":name,"grid":e2e_tests::GRID})
        ));
    }
    // Some names the model refuses (control characters): they are rejected with a code,
    // the rest stored; none stops the batch or the index.
    let receipt = app.ingest("gongan", body).await;
    let accepted = receipt["accepted"].as_u64().unwrap_or(0);
    let rejected = receipt["rejected"].as_array().map_or(0, Vec::len) as u64;
    assert_eq!(accepted + rejected, 200, "{receipt}");
    assert!(accepted > 100, "{receipt}");
    // Published after them: must be found too.
    let first17 = "11010519900505001";
    let check = model::id_number_check_digit(first17).expect("17 digits");
    app.ingest(
        "gongan",
        format!(
            "{}\n",
            serde_json::json!({"kind":"resident","source_id":"GA-AFTER","version":"1",
                "id_number":format!("{first17}{check}"),"name":"赵后来","grid":e2e_tests::GRID})
        ),
    )
    .await;
    let officer = app.token("street_officer", &[e2e_tests::STREET], None);
    let started = std::time::Instant::now();
    loop {
        let (status, page) = app
            .get("/v1/residents?q=赵后来", &officer, Some("routine_visit"))
            .await;
        if status == 200 && page["total"] == 1 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "never found: {page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for query in ["李欸", "王嗯", "欧阳嗯欸", "zhaohoulai"] {
        let (status, page) = app
            .get(
                &format!("/v1/residents?q={query}"),
                &officer,
                Some("routine_visit"),
            )
            .await;
        assert_eq!(status, 200, "{page}");
        assert!(page["total"].as_u64().unwrap_or(0) >= 1, "{query}: {page}");
    }
    let (status, _) = app.get("/readyz", "", None).await;
    assert_eq!(status, 200);
    let admin = app.token("system_admin", &[e2e_tests::STREET], None);
    let (_, problems) = app.get("/v1/admin/problems", &admin, None).await;
    assert!(
        !problems.to_string().contains("panicked"),
        "no entity panicked: {problems}"
    );
}
