//! The dashboard, used as a person would: `txbank up`, a headless Chromium logs in with
//! the API token, watches both banks' balances, sends a transfer through the form and
//! bulk payments through the payments form, and sees both balances change and the
//! books stay conserved; a screenshot is kept.

use crate::support::browser::Browser;
use crate::support::{up_args, Up};

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_sent_from_the_dashboard_form_shows_in_both_banks_balances() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (args, urls) = up_args(&data);
    let up = Up::start(&args, dir.path().join("up.out")).await;
    let token = std::fs::read_to_string(data.join("api-token")).unwrap();
    let browser = Browser::start().await;

    browser.open(&urls.dashboard).await;
    browser.fill("#token", "not-the-token").await;
    browser.click("#login").await;
    assert!(
        browser.text_becomes(".error", |text| text == "Wrong token.").await,
        "a wrong token must be refused"
    );
    browser.fill("#token", token.trim()).await;
    browser.click("#login").await;
    for (balance, expected) in [("#balance-bank1-1", "10000.00"), ("#balance-bank2-2", "0.00")] {
        assert!(
            browser.text_becomes(balance, |text| text == expected).await,
            "{balance} never showed {expected}"
        );
    }
    assert!(
        browser
            .text_becomes("#audit", |text| text.starts_with("conserved"))
            .await
    );

    browser.fill("#from", "1").await;
    browser.fill("#to", "2").await;
    browser.fill("#amount", "250.75").await;
    browser.click("#send").await;
    assert!(
        browser
            .text_becomes("#transfer-result", |text| text.starts_with("debited"))
            .await,
        "the form's transfer was not debited: {}",
        browser.text("#transfer-result").await
    );
    for (balance, expected) in [("#balance-bank1-1", "9749.25"), ("#balance-bank2-2", "250.75")] {
        assert!(
            browser.text_becomes(balance, |text| text == expected).await,
            "{balance} never showed {expected}, it shows {}",
            browser.text(balance).await
        );
    }
    assert!(browser.text_becomes("#recent", |text| text.contains("credited")).await);
    // Every series the chart's key names is drawn, the latencies of a lone transfer too.
    for series in ["credited", "p50", "p99"] {
        assert!(browser.appears(&format!("#chart-key [data-series={series}]")).await);
        assert!(
            browser.appears(&format!("#chart path[data-series={series}]")).await,
            "the chart never drew {series}"
        );
    }
    assert!(
        browser
            .text_becomes("#audit", |text| text.starts_with("conserved"))
            .await
    );

    browser.fill("#amount", "-5").await;
    browser.click("#send").await;
    assert!(
        browser
            .text_becomes("#transfer-result", |text| text.starts_with("refused (400)"))
            .await,
        "bad input must get a clear refusal: {}",
        browser.text("#transfer-result").await
    );

    // Bulk payments: each line its own outcome, a refusal named by its line.
    browser
        .fill(
            "#batch-csv",
            "from,to,amount,to_bank\n1,2,1.25,bank2\n1,2,1.75,bank2\nnobody,2,1.00,bank2",
        )
        .await;
    browser.click("#send-batch").await;
    assert!(
        browser
            .text_becomes("#batch-result", |text| text.starts_with("2 debited, 1 refused")
                && text.contains("line 4"))
            .await,
        "the payments were not sent line by line: {}",
        browser.text("#batch-result").await
    );
    assert!(
        browser.text_becomes("#balance-bank2-2", |text| text == "253.75").await,
        "the payments never reached Li Si: {}",
        browser.text("#balance-bank2-2").await
    );

    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    browser.screenshot(&screenshot).await;
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "an empty screenshot"
    );
    browser.quit().await;
    let (clean, printed) = up.interrupt();
    assert!(clean, "up did not stop cleanly:\n{printed}");
}
