# Adding batchlock to an existing Rails image: build it in a throw-away stage and copy the one
# binary in, with the jobs' config. The rest of the Rails image is unchanged.
#
#   docker build -f deploy/docker/add-to-rails-image.Dockerfile \
#     --build-arg RAILS_IMAGE=my-registry/rails-app:latest -t rails-app-batchlock .
#
# BATCHLOCK_JOBS picks the job config (relative to the build context, this repository); the
# default is the one deploy/terraform/examples/ecs-batches is written for.
ARG RAILS_IMAGE=ruby:3.3-bookworm
FROM rust:1-bookworm AS batchlock
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p batchlock-cli && strip target/release/batchlock

FROM ${RAILS_IMAGE}
ARG BATCHLOCK_JOBS=deploy/terraform/examples/ecs-batches/batchlock.toml
COPY --from=batchlock /src/target/release/batchlock /usr/local/bin/batchlock
COPY ${BATCHLOCK_JOBS} /etc/batchlock/batchlock.toml
ENV BATCHLOCK_CONFIG=/etc/batchlock/batchlock.toml
# The task definition then runs, for example:
#   command: ["batchlock", "run", "xml_articles", "--", "bundle", "exec", "rake", "xml:articles"]
# with BATCH_LOCK_TABLE in the environment. Use the exec form (a JSON array) so that
# batchlock, not /bin/sh, is PID 1 and receives ECS's SIGTERM; if the Rails image has an
# ENTRYPOINT script, it must end in `exec "$@"`.
