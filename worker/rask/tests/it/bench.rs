//! `rask-bench` itself: its workloads run at small sizes and its correctness checks hold on real
//! results (they are unit-tested against fake data in `jobs`).

use std::process::Command;

#[test]
fn the_array_benches_run_small_and_check_their_results() {
    let out = Command::new(env!("CARGO_BIN_EXE_rask-bench"))
        .args(["array-mean", "array-linalg", "--reps", "1"])
        .args(["--array-size", "60", "--array-chunk", "30"])
        .args(["--linalg-size", "300", "--linalg-chunk", "100"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("rask-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rask-bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let mean = lines
        .iter()
        .find(|l| l["bench"] == "array-mean")
        .expect("an array-mean line");
    let var = mean["variance"].as_f64().expect("the variance");
    assert!((var - 1.0 / 12.0).abs() < 0.01, "variance {var}");
    assert!(lines.iter().any(|l| l["bench"] == "array-linalg"));
}

#[test]
fn the_python_map_bench_runs_small_and_checks_its_results() {
    let out = Command::new(env!("CARGO_BIN_EXE_rask-bench"))
        .args(["python-map", "--reps", "1", "--tasks", "200"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("rask-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rask-bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).expect("a JSON line");
    assert_eq!(line["bench"], "python-map");
    assert_eq!(line["tasks"], 200);
    assert!(line["tasks_per_s"]["median"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_tls_runs_of_map_and_array_mean_run_small_under_their_own_names() {
    let out = Command::new(env!("CARGO_BIN_EXE_rask-bench"))
        .args([
            "map",
            "array-mean",
            "--tls",
            "--reps",
            "1",
            "--tasks",
            "200",
        ])
        .args(["--array-size", "60", "--array-chunk", "30"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("rask-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rask-bench --tls failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    for name in ["map-tls", "array-mean-tls"] {
        let line = lines
            .iter()
            .find(|l| l["bench"] == name)
            .unwrap_or_else(|| panic!("no {name} line in {stdout}"));
        assert_eq!(line["transport"], "tls");
    }
    let mean = lines
        .iter()
        .find(|l| l["bench"] == "array-mean-tls")
        .unwrap();
    let var = mean["variance"].as_f64().expect("the variance");
    assert!((var - 1.0 / 12.0).abs() < 0.01, "variance {var}");
}

#[test]
fn scale_runs_each_size_in_its_own_process_and_map_takes_a_list_of_sizes() {
    let out = Command::new(env!("CARGO_BIN_EXE_rask-bench"))
        .args(["scale", "map", "--reps", "1", "--tasks", "200,300"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("rask-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "rask-bench failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let of = |bench: &str| -> Vec<u64> {
        lines
            .iter()
            .filter(|l| l["bench"] == bench)
            .map(|l| l["tasks"].as_u64().expect("tasks"))
            .collect()
    };
    assert_eq!(of("scale"), vec![200, 300], "{stdout}");
    assert_eq!(of("map"), vec![200, 300], "{stdout}");
    for l in lines.iter().filter(|l| l["bench"] == "scale") {
        assert!(l["map"]["tasks_per_s"]["median"].as_f64().unwrap() > 0.0);
        assert!(l["map"]["rss_held_mib"].as_f64().unwrap() > 0.0);
        assert!(l["map"]["rss_bytes_per_task"].as_f64().is_some());
        assert_eq!(l["delayed"]["tasks"], l["tasks"].as_u64().unwrap() + 1);
        assert!(l["delayed"]["total_ms"]["median"].as_f64().unwrap() > 0.0);
    }
}
