# EMR Guard production image: the gateway and the OPA binary, running as a non-root user.
# (No Docker engine runs on the development machines; this file is checked by review, not built in CI.)

FROM golang:1.26-bookworm AS opa
ARG OPA_VERSION=v1.22.3
RUN CGO_ENABLED=0 GOBIN=/out go install github.com/open-policy-agent/opa@${OPA_VERSION}

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY plugins ./plugins
# The policies are package data: the embedded engine reads them from the installed package.
COPY opa_policies ./opa_policies
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    EMRGUARD_LISTEN=0.0.0.0:8080 \
    EMRGUARD_DB=/var/lib/emrguard/emrguard.sqlite \
    EMRGUARD_AUDIT_LOG=-
COPY --from=build /install /usr/local
COPY --from=opa /out/opa /usr/local/bin/opa
# The same policies as files, for an OPA server run beside the gateway (see below).
COPY opa_policies /app/opa_policies
RUN groupadd --system --gid 10001 emrguard \
 && useradd --system --uid 10001 --gid emrguard --home-dir /app --shell /usr/sbin/nologin emrguard \
 && mkdir -p /var/lib/emrguard && chown emrguard:emrguard /var/lib/emrguard
VOLUME /var/lib/emrguard
USER 10001:10001
WORKDIR /app
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"
# Run OPA beside it with:  opa run --server --addr 127.0.0.1:8181 /app/opa_policies
# and set EMRGUARD_POLICY_ENGINE=opa EMRGUARD_OPA_URL=http://127.0.0.1:8181
ENTRYPOINT ["emrguard"]
CMD ["serve"]
