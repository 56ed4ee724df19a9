# The report Lambda function: flux-engine's report code behind
# `[aws] report_function`, as a Lambda container image. Step Functions
# invokes it with the payload `flux-engine export --sfn` writes; it reads
# the query results and the cleaning job's counts from S3 and writes the
# HTML report to S3 (tasks/src/report/aws.rs).
#
#   docker build --platform linux/amd64 -f docker/report-lambda.Dockerfile -t flux-engine-report .
#
# Pushing it to ECR and deploying it: docker/README.md.
#
# Any Linux base works for a Lambda image whose program speaks the Lambda
# Runtime API itself, as `flux-engine lambda report` does; Debian slim is
# the base of docker/Dockerfile too. The template `export --cfn` writes
# declares the function x86_64, hence linux/amd64.
#
# Never built in this project's CI: the development machines have no
# Docker engine. Linted by tests/dockerfiles.rs (hadolint, no finding).
#
# The zip package `flux-engine deploy` uploads is the default for the
# function (no image to build); this image is for `[aws] report_image`.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin flux-engine

FROM debian:bookworm-slim
# ca-certificates: the S3 client verifies TLS against the system roots;
# pinned (hadolint DL3008) to bookworm's, so the image does not change under us.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates=20230311+deb12u1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/flux-engine /usr/local/bin/flux-engine
# Lambda's file system is read-only except /tmp; the function keeps no state.
ENV FLUX_HOME=/tmp/flux
ENTRYPOINT ["flux-engine", "lambda", "report"]
