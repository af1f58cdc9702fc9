//! The tamper-evident access log end to end, over TLS with real tokens: denied and
//! out-of-scope requests are recorded, the compliance officer's search, proofs, export,
//! anomalies and the resident access report.

use std::collections::BTreeSet;

use audit::{hash_leaf, verify_consistency, verify_inclusion, AuditRecord, Hash, MerkleTree};
use chrono::{SecondsFormat, Utc};
use e2e_tests::id;
use e2e_tests::{contains_bytes, files_under, TestApp, GRID, OTHER_GRID, STREET};
use serde_json::{json, Value};

/// The 15-digit form of an 18-digit number of someone born in the 1900s.
fn id15(id18: &str) -> String {
    format!("{}{}", &id18[..6], &id18[8..17])
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn hash(hex_text: &Value) -> Hash {
    let bytes = hex::decode(hex_text.as_str().expect("a hex string")).expect("hex");
    bytes.try_into().expect("32 bytes")
}

fn hashes(list: &Value) -> Vec<Hash> {
    list.as_array().expect("a list").iter().map(hash).collect()
}

fn records(page: &Value) -> Vec<Value> {
    page["records"].as_array().expect("records").clone()
}

/// Publishes residents `first..first + n` in `grid` as gongan; returns their ID numbers
/// and source ids.
async fn publish_residents(
    app: &TestApp,
    prefix: &str,
    first: usize,
    n: usize,
    grid: &str,
) -> Vec<(String, String)> {
    let mut body = String::new();
    let mut people = Vec::new();
    for i in first..first + n {
        let number = id(&format!(
            "1101051980{:02}{:02}{:03}",
            1 + i % 12,
            1 + i % 28,
            i % 1000
        ));
        let source = format!("{prefix}-{i}");
        body.push_str(&format!(
            "{}\n",
            json!({"kind":"resident","source_id":source,"version":"2026-11-01T08:00:00Z",
                "id_number":number,"name":"测试居民","phone":"13812345678","grid":grid})
        ));
        people.push((number, source));
    }
    let receipt = app.ingest("gongan", body).await;
    assert_eq!(receipt["accepted"], n as u64, "{receipt}");
    people
}

/// Compliance search; asserts 200.
async fn search(app: &TestApp, query: &str) -> Value {
    let (status, body) = app
        .get(
            &format!("/v1/audit/records?{query}"),
            &app.compliance(),
            None,
        )
        .await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

#[tokio::test]
async fn denied_and_out_of_scope_requests_are_recorded_and_found_by_actor_resident_and_decision() {
    let app = TestApp::spawn().await;
    let mine = publish_residents(&app, "GA-MINE", 0, 1, GRID).await;
    let theirs = publish_residents(&app, "GA-THEIRS", 1, 1, OTHER_GRID).await;
    let mine_id = app.unified_id("resident", "gongan", &mine[0].1).await;
    let theirs_id = app.unified_id("resident", "gongan", &theirs[0].1).await;
    let worker = app.token("grid_worker", &[GRID], None);

    let allowed = app
        .get_traced(
            &format!("/v1/residents/{mine_id}"),
            &worker,
            Some("routine_visit"),
            None,
        )
        .await;
    assert_eq!(allowed.status, 200);
    let out_of_scope = app
        .get_traced(
            &format!("/v1/residents/{theirs_id}"),
            &worker,
            Some("routine_visit"),
            None,
        )
        .await;
    assert_eq!(out_of_scope.status, 404);
    let no_purpose = app
        .get_traced(&format!("/v1/residents/{mine_id}"), &worker, None, None)
        .await;
    assert_eq!(no_purpose.status, 400);
    let publisher = app.publisher("gongan");
    let wrong_role = app
        .get_traced(
            &format!("/v1/residents/{mine_id}"),
            &publisher,
            Some("routine_visit"),
            None,
        )
        .await;
    assert_eq!(wrong_role.status, 403);

    // By actor and decision: the two refusals of the worker, with the right outcomes.
    let denied = search(&app, "actor=test-grid_worker&decision=deny").await;
    let got: Vec<(String, String, String)> = records(&denied)
        .iter()
        .map(|r| {
            (
                r["request_id"].as_str().unwrap_or_default().to_owned(),
                r["action"].as_str().unwrap_or_default().to_owned(),
                r["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                out_of_scope.request_id.clone(),
                "read_resident".to_owned(),
                "out_of_scope".to_owned()
            ),
            (
                no_purpose.request_id.clone(),
                "refused".to_owned(),
                "purpose_required".to_owned()
            ),
        ]
    );
    let out_of_scope_record = &records(&denied)[0];
    assert_eq!(out_of_scope_record["entities"], json!([theirs_id]));
    assert_eq!(out_of_scope_record["purpose"], "routine_visit");
    let publisher_denied = search(&app, "actor=test-dept_publisher&decision=deny").await;
    let refusal = &records(&publisher_denied)[0];
    assert_eq!(refusal["request_id"], wrong_role.request_id.as_str());
    assert_eq!(refusal["outcome"], "role_cannot_read");
    assert_eq!(refusal["actor"]["roles"], json!(["dept_publisher"]));

    // By resident: the unified id, the 18-digit and the 15-digit ID number all name the same
    // records, and they include the allowed read and the by-source lookup.
    let by_unified = search(&app, &format!("resident={mine_id}&action=read_resident")).await;
    let ids: Vec<String> = records(&by_unified)
        .iter()
        .filter_map(|r| r["request_id"].as_str().map(str::to_owned))
        .collect();
    assert!(ids.contains(&allowed.request_id), "{by_unified}");
    let allowed_record = records(&by_unified)
        .into_iter()
        .find(|r| r["request_id"] == allowed.request_id.as_str())
        .expect("the allowed read");
    assert_eq!(allowed_record["decision"], "masked");
    assert_eq!(
        allowed_record["residents"].as_array().map(Vec::len),
        Some(1)
    );
    for form in [mine[0].0.clone(), id15(&mine[0].0)] {
        let by_number = search(&app, &format!("resident={form}&action=read_resident")).await;
        assert_eq!(by_number["records"], by_unified["records"], "{form}");
        assert!(!by_number.to_string().contains(&form));
    }
    let other = search(&app, &format!("resident={theirs_id}")).await;
    assert!(records(&other)
        .iter()
        .any(|r| r["request_id"] == out_of_scope.request_id.as_str()));

    // Stable 400 codes; none echoes what it refused.
    let officer = app.compliance();
    for (query, code) in [
        ("limit=0", "limit_invalid"),
        ("limit=501", "limit_invalid"),
        ("limit=ten", "limit_invalid"),
        ("resident=110105198001010011", "resident_invalid"),
        ("resident=h_0123", "resident_invalid"),
        ("from=yesterday", "from_invalid"),
        ("to=2026-13-01T00:00:00Z", "to_invalid"),
        (
            "from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z",
            "range_invalid",
        ),
        ("decision=maybe", "decision_invalid"),
        ("cursor=bm9wZQ", "cursor_invalid"),
        ("actr=someone", "query_invalid"),
    ] {
        let (status, body) = app
            .get(&format!("/v1/audit/records?{query}"), &officer, None)
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
        assert!(!body.to_string().contains("110105198001010011"));
    }

    // No ID number reached the log, even after searching by one.
    for file in files_under(&app.data_dir.join("audit")) {
        let bytes = std::fs::read(&file).expect("readable");
        for person in mine.iter().chain(&theirs) {
            assert!(
                !contains_bytes(&bytes, person.0.as_bytes()),
                "{}",
                file.display()
            );
            assert!(!contains_bytes(&bytes, id15(&person.0).as_bytes()));
        }
    }
}

#[tokio::test]
async fn only_compliance_officers_read_the_log_and_refusals_are_recorded() {
    let app = TestApp::spawn().await;
    for role in [
        "grid_worker",
        "street_officer",
        "dept_publisher",
        "security_admin",
        "system_admin",
    ] {
        let token = app.token(role, &[STREET], Some("gongan"));
        for path in [
            "/v1/audit/records",
            "/v1/audit/checkpoint",
            "/v1/audit/proof/inclusion?seq=0",
            "/v1/audit/proof/consistency?old=0",
            "/v1/audit/export",
            "/v1/audit/anomalies",
            "/v1/audit/residents/r_0123456789abcdef0123/report",
        ] {
            let (status, body) = app.get(path, &token, None).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (403, Some("role_cannot_read_audit")),
                "{role} {path}"
            );
        }
        let refused = search(&app, &format!("actor=test-{role}&action=refused")).await;
        let refused = records(&refused);
        assert_eq!(refused.len(), 7, "{role}");
        assert!(refused
            .iter()
            .all(|r| r["decision"] == "deny" && r["outcome"] == "role_cannot_read_audit"));
        assert!(refused
            .iter()
            .any(|r| r["endpoint"] == "/v1/audit/residents/{resident}/report"));
    }
    let (status, _) = app.get("/v1/audit/records", "not-a-token", None).await;
    assert_eq!(status, 401);
    // The officer's own searches are on the record too.
    let own = search(&app, "actor=test-compliance_officer&action=audit_search").await;
    assert!(!records(&own).is_empty());
}

#[tokio::test]
async fn paging_a_time_range_neither_skips_nor_repeats() {
    let app = TestApp::spawn().await;
    let people = publish_residents(&app, "GA-P", 0, 3, GRID).await;
    let mut unified = Vec::new();
    for (_, source) in &people {
        unified.push(app.unified_id("resident", "gongan", source).await);
    }
    let worker = app.token("grid_worker", &[GRID], None);
    let from = now();
    let mut request_ids = BTreeSet::new();
    for i in 0..23 {
        let r = app
            .get_traced(
                &format!("/v1/residents/{}", unified[i % 3]),
                &worker,
                Some("routine_visit"),
                None,
            )
            .await;
        assert_eq!(r.status, 200);
        request_ids.insert(r.request_id);
    }
    let to = now();
    // More records after the range, and between the pages below.
    app.get(
        &format!("/v1/residents/{}", unified[0]),
        &worker,
        Some("routine_visit"),
    )
    .await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query = format!("from={from}&to={to}&limit=5");
        if let Some(c) = &cursor {
            query.push_str(&format!("&cursor={c}"));
        }
        let page = search(&app, &query).await;
        pages += 1;
        let batch = records(&page);
        assert!(batch.len() <= 5);
        seen.extend(batch);
        app.get(
            &format!("/v1/residents/{}", unified[1]),
            &worker,
            Some("routine_visit"),
        )
        .await;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 20, "paging does not end");
    }
    let seqs: Vec<u64> = seen.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "ascending, no repeats: {seqs:?}"
    );
    let got: BTreeSet<String> = seen
        .iter()
        .filter_map(|r| r["request_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(got, request_ids, "exactly the reads in the range");
    assert_eq!(pages, 5);
    let whole = search(&app, &format!("from={from}&to={to}&limit=500")).await;
    assert_eq!(records(&whole), seen);
}

#[tokio::test]
async fn checkpoints_inclusion_and_consistency_proofs_verify_and_export_recomputes_the_root() {
    let app = TestApp::spawn().await;
    let people = publish_residents(&app, "GA-C", 0, 2, GRID).await;
    let unified = app.unified_id("resident", "gongan", &people[0].1).await;
    let worker = app.token("grid_worker", &[GRID], None);
    let read = app
        .get_traced(
            &format!("/v1/residents/{unified}"),
            &worker,
            Some("routine_visit"),
            None,
        )
        .await;
    assert_eq!(read.status, 200);
    let officer = app.compliance();
    let key_text = std::fs::read_to_string(app.data_dir.join("audit/checkpoint-public.key"))
        .expect("the public key beside the log");
    let key = audit::PublicKey::parse(&key_text).expect("a verifier key");

    let (status, cp1) = app.get("/v1/audit/checkpoint", &officer, None).await;
    assert_eq!(status, 200, "{cp1}");
    let signed1 = audit::SignedCheckpoint::open(cp1["note"].as_str().expect("note"), &key)
        .expect("the checkpoint signature verifies");
    let size1 = cp1["size"].as_u64().expect("size");
    assert_eq!((signed1.size, signed1.root), (size1, hash(&cp1["root"])));

    // Inclusion of the read, by request id, against the checkpoint.
    let (status, proof) = app
        .get(
            &format!(
                "/v1/audit/proof/inclusion?request_id={}&tree_size={size1}",
                read.request_id
            ),
            &officer,
            None,
        )
        .await;
    assert_eq!(status, 200, "{proof}");
    let seq = proof["seq"].as_u64().expect("seq");
    let record: AuditRecord = serde_json::from_value(proof["record"].clone()).expect("a record");
    assert_eq!(record.request_id, read.request_id);
    let leaf = hash_leaf(&record.canonical_bytes().expect("encodes"));
    assert_eq!(leaf, hash(&proof["leaf_hash"]));
    let path = hashes(&proof["hashes"]);
    verify_inclusion(&leaf, seq, size1, &path, &signed1.root).expect("inclusion verifies");
    // A proof with a flipped bit, a wrong size or a wrong leaf does not.
    if let Some(first) = path.first() {
        let mut bad = path.clone();
        let mut h = *first;
        h[0] ^= 1;
        bad[0] = h;
        assert!(verify_inclusion(&leaf, seq, size1, &bad, &signed1.root).is_err());
    }
    assert!(verify_inclusion(&leaf, seq, size1 + 1, &path, &signed1.root).is_err());
    assert!(verify_inclusion(&hash_leaf(b"forged"), seq, size1, &path, &signed1.root).is_err());

    // By seq, with the server choosing a checkpoint that covers it.
    let (status, by_seq) = app
        .get(
            &format!("/v1/audit/proof/inclusion?seq={seq}"),
            &officer,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let cp =
        audit::SignedCheckpoint::open(by_seq["checkpoint"]["note"].as_str().expect("note"), &key)
            .expect("signed");
    verify_inclusion(&leaf, seq, cp.size, &hashes(&by_seq["hashes"]), &cp.root).expect("verifies");

    // More traffic, a second checkpoint, and a consistency proof between the two.
    for _ in 0..5 {
        app.get(
            &format!("/v1/residents/{unified}"),
            &worker,
            Some("routine_visit"),
        )
        .await;
    }
    let (_, cp2) = app.get("/v1/audit/checkpoint", &officer, None).await;
    let signed2 =
        audit::SignedCheckpoint::open(cp2["note"].as_str().expect("note"), &key).expect("signed");
    assert!(signed2.size > size1);
    let (status, consistency) = app
        .get(
            &format!(
                "/v1/audit/proof/consistency?old={size1}&new={}",
                signed2.size
            ),
            &officer,
            None,
        )
        .await;
    assert_eq!(status, 200, "{consistency}");
    let proof = hashes(&consistency["hashes"]);
    verify_consistency(size1, signed2.size, &signed1.root, &signed2.root, &proof)
        .expect("consistent");
    assert!(verify_consistency(size1, signed2.size, &signed2.root, &signed1.root, &proof).is_err());
    if proof.len() > 1 {
        assert!(verify_consistency(
            size1,
            signed2.size,
            &signed1.root,
            &signed2.root,
            &proof[1..]
        )
        .is_err());
    }

    for (query, code) in [
        ("/v1/audit/proof/inclusion", "proof_target_invalid"),
        (
            "/v1/audit/proof/inclusion?seq=1&request_id=x",
            "proof_target_invalid",
        ),
        (
            "/v1/audit/proof/inclusion?seq=0&tree_size=0",
            "tree_size_invalid",
        ),
        ("/v1/audit/proof/inclusion?seq=-1", "seq_invalid"),
        (
            "/v1/audit/proof/consistency?old=5&new=2",
            "tree_size_invalid",
        ),
        (
            "/v1/audit/proof/consistency?old=999999",
            "tree_size_invalid",
        ),
    ] {
        let (status, body) = app.get(query, &officer, None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}: {body}"
        );
    }
    let (status, body) = app
        .get(
            "/v1/audit/proof/inclusion?request_id=no-such-request",
            &officer,
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("record_not_found"))
    );

    // The export of the whole log: every line hashes to a leaf, the leaves give the root of
    // the signed checkpoint on the last line.
    let (status, content_type, text) = app.get_text("/v1/audit/export", &officer).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/x-ndjson");
    let lines: Vec<&str> = text.lines().collect();
    let (last, record_lines) = lines.split_last().expect("at least the checkpoint line");
    let trailer: Value = serde_json::from_str(last).expect("JSON trailer");
    let cp =
        audit::SignedCheckpoint::open(trailer["checkpoint"]["note"].as_str().expect("note"), &key)
            .expect("signed");
    let mut tree = MerkleTree::new();
    for (i, line) in record_lines.iter().enumerate() {
        let record = AuditRecord::from_canonical_bytes(line.as_bytes()).expect("canonical record");
        assert_eq!(record.seq, i as u64);
        tree.push(hash_leaf(line.as_bytes()));
    }
    assert_eq!(tree.size(), cp.size);
    assert_eq!(tree.root(), cp.root);
    assert!(text.contains(&read.request_id));

    // A time-range export holds only that range, still with a covering checkpoint.
    let (status, _, empty) = app
        .get_text(
            "/v1/audit/export?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z",
            &officer,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(empty.lines().count(), 1);
    assert!(empty.starts_with("{\"checkpoint\":"));

    // The same export as a workbook for reading: a row per record, the checkpoint beside.
    let response = app
        .client
        .get(format!("{}/v1/audit/export?format=xlsx", app.url))
        .bearer_auth(&officer)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    let exported: usize = response.headers()["x-audit-records"]
        .to_str()
        .expect("a count")
        .parse()
        .expect("a number");
    let bytes = response.bytes().await.expect("the workbook");
    let mut workbook: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(bytes.to_vec())).expect("an xlsx");
    use calamine::Reader as _;
    let rows = workbook
        .worksheet_range("访问记录")
        .expect("the records sheet");
    assert_eq!(rows.height(), exported + 1, "a header and a row per record");
    let text: Vec<String> = rows.rows().flatten().map(|c| c.to_string()).collect();
    assert!(
        text.iter().any(|c| c == &read.request_id),
        "the read is in the workbook"
    );
    let checkpoint = workbook
        .worksheet_range("检查点")
        .expect("the checkpoint sheet");
    assert!(checkpoint
        .rows()
        .any(|r| matches!(r.first(), Some(calamine::Data::String(k)) if k == "root")));
    let (status, bad) = app.get("/v1/audit/export?format=pdf", &officer, None).await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("format_invalid"))
    );
}

#[tokio::test]
async fn a_burst_of_lookups_and_of_denials_are_anomalies_with_evidence() {
    let app = TestApp::spawn().await;
    let people = publish_residents(&app, "GA-B", 0, 12, GRID).await;
    let mut unified = Vec::new();
    for (_, source) in &people {
        unified.push(app.unified_id("resident", "gongan", source).await);
    }
    let worker = app.token("grid_worker", &[GRID], None);
    let mut burst = BTreeSet::new();
    for id in &unified {
        let r = app
            .get_traced(
                &format!("/v1/residents/{id}"),
                &worker,
                Some("routine_visit"),
                None,
            )
            .await;
        assert_eq!(r.status, 200);
        burst.insert(r.request_id);
    }
    let snooper = app.token("community_officer", &[GRID], None);
    for _ in 0..5 {
        let r = app
            .get_traced(
                &format!("/v1/residents/{}", unified[0]),
                &snooper,
                None,
                None,
            )
            .await;
        assert_eq!(r.status, 400);
    }
    let street = app.token("street_officer", &[STREET], None);
    let glass = app
        .client
        .get(format!("{}/v1/residents/{}", app.url, unified[1]))
        .bearer_auth(&street)
        .header("x-purpose", "emergency")
        .header(
            "x-break-glass",
            "resident unconscious, ambulance needs history",
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(glass.status(), 200);
    let officer = app.compliance();
    let (status, report) = app
        .get("/v1/audit/anomalies?bulk_threshold=10", &officer, None)
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["settings"]["bulk_threshold"], 10);
    let anomalies = report["anomalies"].as_array().expect("anomalies");
    let bulk = anomalies
        .iter()
        .find(|a| a["kind"] == "bulk_lookup" && a["actor"] == "test-grid_worker")
        .unwrap_or_else(|| panic!("bulk lookup in {report}"));
    assert_eq!(bulk["count"], 12);
    assert_eq!(bulk["evidence_seqs"].as_array().map(Vec::len), Some(12));
    let evidence = bulk["evidence"].as_array().expect("evidence records");
    assert_eq!(evidence.len(), 5);
    assert!(evidence
        .iter()
        .all(|r| burst.contains(r["request_id"].as_str().unwrap_or_default())));
    let denials = anomalies
        .iter()
        .find(|a| a["kind"] == "repeated_denials")
        .unwrap_or_else(|| panic!("repeated denials in {report}"));
    assert_eq!(
        (denials["actor"].as_str(), denials["count"].as_u64()),
        (Some("test-community_officer"), Some(5))
    );

    let glass = anomalies
        .iter()
        .find(|a| a["kind"] == "break_glass")
        .unwrap_or_else(|| panic!("break-glass use in {report}"));
    assert_eq!(glass["actor"], "test-street_officer");
    assert_eq!(glass["evidence"][0]["decision"], "break_glass");
    assert!(glass["resident"].as_str().is_some());
    // With the default threshold (50) twelve residents are not a bulk lookup.
    let (_, quiet) = app.get("/v1/audit/anomalies", &officer, None).await;
    assert!(!quiet["anomalies"]
        .as_array()
        .expect("anomalies")
        .iter()
        .any(|a| a["kind"] == "bulk_lookup"));
    for (query, code) in [
        ("bulk_threshold=0", "threshold_invalid"),
        ("work_start=8am", "work_hours_invalid"),
        ("work_start=20:00&work_end=08:00", "work_hours_invalid"),
        (
            "from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z",
            "range_too_large",
        ),
    ] {
        let (status, body) = app
            .get(&format!("/v1/audit/anomalies?{query}"), &officer, None)
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{query}"
        );
    }
}

#[tokio::test]
async fn the_resident_report_shows_offices_not_people_and_defers_case_accesses() {
    let app = TestApp::spawn().await;
    let people = publish_residents(&app, "GA-R", 0, 1, GRID).await;
    let unified = app.unified_id("resident", "gongan", &people[0].1).await;
    let worker = app.token("grid_worker", &[GRID], None);
    let visit = app
        .get_traced(
            &format!("/v1/residents/{unified}"),
            &worker,
            Some("elderly_care"),
            None,
        )
        .await;
    assert_eq!(visit.status, 200);
    let investigator = app.token("street_officer", &[STREET], None);
    let case = app
        .get_traced(
            &format!("/v1/residents/{unified}"),
            &investigator,
            Some("case_investigation"),
            Some("CASE-2026-17"),
        )
        .await;
    assert_eq!(case.status, 200);
    let officer = app.compliance();

    let (status, report) = app
        .get(
            &format!("/v1/audit/residents/{unified}/report"),
            &officer,
            None,
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["resident"], unified.as_str());
    assert_eq!(
        (
            report["case_deferral_days"].as_i64(),
            report["deferred"].as_u64()
        ),
        (Some(90), Some(1))
    );
    let reads: Vec<&Value> = report["accesses"]
        .as_array()
        .expect("accesses")
        .iter()
        .filter(|a| a["action"] == "read_resident")
        .collect();
    assert_eq!(reads.len(), 1, "{report}");
    assert_eq!(reads[0]["organisation"], "网格员");
    assert_eq!(reads[0]["purpose"], "elderly_care");
    assert_eq!(reads[0]["decision"], "masked");
    assert!(reads[0]["fields_clear"]
        .as_array()
        .is_some_and(|f| !f.is_empty()));
    let text = report.to_string();
    for private in [
        "test-grid_worker",
        "测试grid_worker",
        "test-street_officer",
        "CASE-2026-17",
    ] {
        assert!(!text.contains(private), "{private} in {text}");
    }

    // With no deferral the case access shows; the ID number names the same resident.
    let (status, open) = app
        .get(
            &format!("/v1/audit/residents/{}/report?defer_days=0", people[0].0),
            &officer,
            None,
        )
        .await;
    assert_eq!(status, 200, "{open}");
    assert_eq!(
        (open["resident"].as_str(), open["deferred"].as_u64()),
        (Some(unified.as_str()), Some(0))
    );
    let case_read = open["accesses"]
        .as_array()
        .expect("accesses")
        .iter()
        .find(|a| a["purpose"] == "case_investigation")
        .unwrap_or_else(|| panic!("case access in {open}"));
    assert_eq!(case_read["organisation"], "街道工作人员");
    assert!(!open.to_string().contains(&people[0].0));
    let (status, body) = app
        .get(
            &format!("/v1/audit/residents/{unified}/report?defer_days=-1"),
            &officer,
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("defer_days_invalid"))
    );
    // The report itself is on the record, under the resident and the route template only.
    let reports = search(
        &app,
        &format!("resident={unified}&action=audit_resident_report"),
    )
    .await;
    let reports = records(&reports);
    assert_eq!(reports.len(), 2);
    assert!(reports
        .iter()
        .all(|r| r["endpoint"] == "/v1/audit/residents/{resident}/report"));
    let _ = case.request_id;
}

#[tokio::test]
async fn staff_read_their_own_accesses_and_nobody_elses() {
    let app = TestApp::spawn().await;
    let body = format!(
        "{}\n",
        json!({"kind":"resident","source_id":"GA-1","version":"1",
            "id_number":id("11010519700101002"),"name":"张三","grid":GRID})
    );
    app.ingest("gongan", body).await;
    let zhang = app.unified_id("resident", "gongan", "GA-1").await;
    let me = app.token("grid_worker", &[GRID], None);
    let (status, _) = app
        .get(
            &format!("/v1/residents/{zhang}"),
            &me,
            Some("routine_visit"),
        )
        .await;
    assert_eq!(status, 200);
    // Another grid worker's search is not in my list, nor is the street officer's lookup.
    let colleague = app.token("community_officer", &[GRID], None);
    let (status, _) = app
        .get("/v1/residents?q=zs", &colleague, Some("routine_visit"))
        .await;
    assert_eq!(status, 200);
    let (status, mine) = app.get("/v1/audit/mine", &me, None).await;
    assert_eq!(status, 200, "{mine}");
    let records = mine["records"].as_array().cloned().unwrap_or_default();
    assert!(!records.is_empty(), "{mine}");
    assert!(
        records
            .iter()
            .all(|r| r["actor"]["sub"] == "test-grid_worker"),
        "{mine}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["action"] == "read_resident" && r["entities"][0] == zhang.as_str()),
        "{mine}"
    );
    // Newest first.
    let seqs: Vec<u64> = records.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    // Each look at one's own list is itself in the log.
    let (_, again) = app.get("/v1/audit/mine", &me, None).await;
    assert_eq!(again["records"][0]["action"], "audit_mine", "{again}");
    // Bounds, and no token.
    for bad in [
        "days=0",
        "days=91",
        "days=x",
        "limit=0",
        "actor=test-community_officer",
    ] {
        let (status, body) = app.get(&format!("/v1/audit/mine?{bad}"), &me, None).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = app.get("/v1/audit/mine", "not-a-token", None).await;
    assert_eq!(status, 401);
}
