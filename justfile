# Task runner; CI (.ci/run) runs the same commands.

# Run every service on the embedded default (SQLite under ./data, in-process bus).
dev:
    cargo run -p release-pilot -- serve

# Run on PostgreSQL + NATS JetStream on this machine.
dev-distributed:
    RP_DATABASE__URL=postgres://postgres@127.0.0.1:5432/test RP_NATS__URL=nats://127.0.0.1:4222 cargo run -p release-pilot -- serve

# The test suite on the embedded backend (the README's command).
test:
    cargo test --workspace

# The same suite on PostgreSQL + JetStream.
test-distributed:
    RELEASE_PILOT_TEST_BACKEND=distributed cargo test --workspace

lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

fmt:
    cargo fmt --all

# Regenerate docs/openapi.json from the code (CI fails when it drifts).
openapi:
    cargo run -q -p release-pilot -- openapi > docs/openapi.json

# grpcurl and schemathesis against a live binary.
check-live:
    cargo build -p release-pilot
    scripts/check-live.sh target/debug/release-pilot

# Validate Dockerfile, compose, Kubernetes, Prometheus, Alertmanager and workflow files.
validate-deploy:
    scripts/validate-deploy.sh

# Everything CI runs.
ci:
    .ci/run

# Benchmarks; results in bench/results/ (see docs/benchmarks.md).
bench *names:
    scripts/bench.sh {{names}}
