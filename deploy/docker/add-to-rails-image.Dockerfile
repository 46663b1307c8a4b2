# Adding batchlock to an existing Rails image: build it in a throw-away stage and copy the one
# binary in. The rest of the Rails image is unchanged.
#
#   docker build -f deploy/docker/add-to-rails-image.Dockerfile \
#     --build-arg RAILS_IMAGE=my-registry/rails-app:latest -t rails-app-batchlock .
ARG RAILS_IMAGE=ruby:3.3-bookworm
FROM rust:1-bookworm AS batchlock
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p batchlock-cli && strip target/release/batchlock

FROM ${RAILS_IMAGE}
COPY --from=batchlock /src/target/release/batchlock /usr/local/bin/batchlock
# The task definition then runs, for example:
#   command: ["batchlock", "run", "xml_articles", "--", "bundle", "exec", "rake", "xml:articles"]
# with BATCH_LOCK_TABLE in the environment. Use the exec form (a JSON array) so that
# batchlock, not /bin/sh, is PID 1 and receives ECS's SIGTERM.
