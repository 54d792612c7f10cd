//! A corpus of bad requests: each gets a clear 4xx JSON error with a stable code, and
//! none of them moves money or leaves a transfer behind.

use crate::support::{audit_is_clean, counts, Cluster, Db, API_TOKEN};
use reqwest::Method;

/// One bad request and the answer it must get.
struct Case {
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    headers: &'static [(&'static str, &'static str)],
    body: String,
    status: u16,
    code: &'static str,
}

fn post(body: &str, status: u16, code: &'static str) -> Case {
    Case {
        method: Method::POST,
        path: "/transfers",
        content_type: Some("application/json"),
        headers: &[],
        body: body.to_string(),
        status,
        code,
    }
}

fn transfer(amount: &str, status: u16, code: &'static str) -> Case {
    post(&format!(r#"{{"from":"1","to":"2","amount":{amount}}}"#), status, code)
}

fn get(path: &'static str, status: u16, code: &'static str) -> Case {
    Case {
        method: Method::GET,
        path,
        content_type: None,
        headers: &[],
        body: String::new(),
        status,
        code,
    }
}

fn corpus() -> Vec<Case> {
    let mut cases = vec![
        // Amounts.
        transfer(r#""0""#, 400, "invalid_amount"),
        transfer(r#""0.00""#, 400, "invalid_amount"),
        transfer("0", 400, "invalid_amount"),
        transfer(r#""-5""#, 400, "invalid_amount"),
        transfer("-5", 400, "invalid_amount"),
        transfer(r#""-0.01""#, 400, "invalid_amount"),
        transfer(r#""NaN""#, 400, "invalid_amount"),
        transfer(r#""Infinity""#, 400, "invalid_amount"),
        transfer(r#""1.001""#, 400, "invalid_amount"),
        transfer("1.001", 400, "invalid_amount"),
        transfer(r#""100000000""#, 400, "invalid_amount"),
        transfer("100000000.00", 400, "invalid_amount"),
        transfer("1e2", 400, "invalid_amount"),
        transfer("1E400", 400, "invalid_amount"),
        transfer(r#""0x10""#, 400, "invalid_amount"),
        transfer(r#""+1""#, 400, "invalid_amount"),
        transfer(r#""1.""#, 400, "invalid_amount"),
        transfer(r#"".5""#, 400, "invalid_amount"),
        transfer(r#"" 5""#, 400, "invalid_amount"),
        transfer(r#""5 ""#, 400, "invalid_amount"),
        transfer(r#""1,00""#, 400, "invalid_amount"),
        transfer(r#""１００""#, 400, "invalid_amount"),
        transfer(r#""""#, 400, "invalid_amount"),
        transfer("true", 400, "invalid_amount"),
        transfer("null", 400, "invalid_amount"),
        transfer("[1]", 400, "invalid_amount"),
        transfer(r#"{"value":1}"#, 400, "invalid_amount"),
        transfer(r#""99999999999999999999999999999""#, 400, "invalid_amount"),
        // Accounts.
        post(
            r#"{"from":"1","to":"1","to_bank":"bank1","amount":"5"}"#,
            422,
            "same_account",
        ),
        post(
            r#"{"from":"1","to":"2","to_bank":"bank 2","amount":"5"}"#,
            400,
            "invalid_bank",
        ),
        post(
            r#"{"from":"1","to":"2","to_bank":"bank9","amount":"5"}"#,
            422,
            "unknown_bank",
        ),
        post(r#"{"from":"1","to":"2","to_bank":2,"amount":"5"}"#, 400, "invalid_json"),
        post(r#"{"from":"","to":"2","amount":"5"}"#, 400, "invalid_account"),
        post(r#"{"from":"1","to":"","amount":"5"}"#, 400, "invalid_account"),
        post(
            r#"{"from":"1' OR '1'='1","to":"2","amount":"5"}"#,
            400,
            "invalid_account",
        ),
        post(
            r#"{"from":"1; DROP TABLE account_info;--","to":"2","amount":"5"}"#,
            400,
            "invalid_account",
        ),
        post(r#"{"from":"1","to":"２","amount":"5"}"#, 400, "invalid_account"),
        post(r#"{"from":"1","to":"2\u202e","amount":"5"}"#, 400, "invalid_account"),
        post(r#"{"from":"1","to":"2\u0000","amount":"5"}"#, 400, "invalid_account"),
        post(r#"{"from":"1","to":"../2","amount":"5"}"#, 400, "invalid_account"),
        post(
            &format!(r#"{{"from":"1","to":"{}","amount":"5"}}"#, "9".repeat(65)),
            400,
            "invalid_account",
        ),
        post(r#"{"from":"404","to":"2","amount":"5"}"#, 422, "unknown_account"),
        post(
            r#"{"from":"1","to":"2","amount":"10000.01"}"#,
            422,
            "insufficient_funds",
        ),
        // Shapes.
        post(r#"{"from":"1","to":"2"}"#, 400, "invalid_json"),
        post(r#"{"to":"2","amount":"5"}"#, 400, "invalid_json"),
        post(r#"{"from":1,"to":"2","amount":"5"}"#, 400, "invalid_json"),
        post(
            r#"{"from":"1","to":"2","amount":"5","extra":true}"#,
            400,
            "invalid_json",
        ),
        post(r#"{"from":"1","to":"2","amount":"5""#, 400, "invalid_json"),
        post("not json", 400, "invalid_json"),
        post("", 400, "invalid_json"),
        post("[]", 400, "invalid_json"),
        post("null", 400, "invalid_json"),
        post(
            &format!(r#"{{"from":"{}","to":"2","amount":"5"}}"#, "1".repeat(100_000)),
            413,
            "body_too_large",
        ),
        // Idempotency keys.
        post(
            r#"{"from":"1","to":"2","amount":"5","idempotency_key":""}"#,
            400,
            "invalid_idempotency_key",
        ),
        post(
            r#"{"from":"1","to":"2","amount":"5","idempotency_key":"a b"}"#,
            400,
            "invalid_idempotency_key",
        ),
        post(
            &format!(
                r#"{{"from":"1","to":"2","amount":"5","idempotency_key":"{}"}}"#,
                "k".repeat(129)
            ),
            400,
            "invalid_idempotency_key",
        ),
        Case {
            headers: &[("idempotency-key", "one")],
            ..post(
                r#"{"from":"1","to":"2","amount":"5","idempotency_key":"two"}"#,
                422,
                "idempotency_keys_differ",
            )
        },
        // Content types.
        Case {
            content_type: Some("text/plain"),
            ..post(r#"{"from":"1","to":"2","amount":"5"}"#, 415, "unsupported_media_type")
        },
        Case {
            content_type: None,
            ..post(r#"{"from":"1","to":"2","amount":"5"}"#, 415, "unsupported_media_type")
        },
        Case {
            content_type: Some("application/x-www-form-urlencoded"),
            ..post("from=1&to=2&amount=5", 415, "unsupported_media_type")
        },
        // The seed's API and the read routes.
        get("/transfer?accountNo=1", 400, "missing_parameter"),
        get("/transfer?amount=5", 400, "missing_parameter"),
        get("/transfer?accountNo=1&amount=abc", 400, "invalid_amount"),
        get("/transfer?accountNo=1&amount=-1", 400, "invalid_amount"),
        get("/transfer?accountNo=2&amount=1", 422, "unknown_account"),
        get("/transfer?accountNo=%27%20OR%201%3D1&amount=1", 400, "invalid_account"),
        get("/transfers/not%20a%20tx", 400, "invalid_tx_no"),
        get("/transfers/00000000-0000-0000-0000-000000000000", 404, "not_found"),
        get("/accounts/404", 404, "not_found"),
        get("/accounts/%E2%80%AE1", 400, "invalid_account"),
        get("/no/such/route", 404, "not_found"),
    ];
    cases.push(Case {
        method: Method::DELETE,
        ..get("/accounts/1", 405, "")
    });
    cases
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_request_gets_a_clear_error_and_changes_nothing() {
    let (_cluster, mut bank1, mut bank2) = Cluster::with_banks(Db::Sqlite).await;
    bank1.start_in_process().await;
    bank2.start().await;
    let client = reqwest::Client::new();
    let cases = corpus();
    assert!(cases.len() >= 50, "the corpus has only {} cases", cases.len());

    for case in cases {
        let mut request = client
            .request(case.method.clone(), format!("{}{}", bank1.url(), case.path))
            .bearer_auth(API_TOKEN)
            .body(case.body.clone());
        if let Some(content_type) = case.content_type {
            request = request.header("content-type", content_type);
        }
        for (name, value) in case.headers {
            request = request.header(*name, *value);
        }
        // A server may answer an oversized body and close the connection before the
        // client has written it all; the client then sees the connection reset instead
        // of the answer. Such a request is sent again; an answer must be the expected one.
        let mut response = None;
        for _ in 0..5 {
            match request.try_clone().expect("a plain body").send().await {
                Ok(answer) => {
                    response = Some(answer);
                    break;
                }
                Err(error) => eprintln!("{} {}: {error}; sending it again", case.method, case.path),
            }
        }
        let response = response.expect("no answer in five tries");
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let shown = format!("{} {} {:.80}", case.method, case.path, case.body);
        assert_eq!(status, case.status, "{shown} -> {body}");
        if !case.code.is_empty() {
            assert_eq!(body["error"]["code"], case.code, "{shown} -> {body}");
            assert!(
                body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{shown}: no message"
            );
        }
    }

    assert_eq!(bank1.balance("1").await, "10000.00");
    assert_eq!(bank2.balance("2").await, "0.00");
    let report = audit_is_clean(&bank2, &bank1);
    assert_eq!(
        counts(&report, &["debited", "credited"]),
        [0, 0],
        "only refused transfers may be recorded"
    );
}
