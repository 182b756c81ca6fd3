"""Renders each service's Envoy sidecar config from the topology.

Ingress listener: the service's public address; forwards to the local app.
Egress listener: where the app sends every outbound call; routes by gRPC service name
(the `/package.Service/` path prefix) to the callee's ingress. Both report spans to
Jaeger with Envoy's OpenTelemetry tracer."""

from __future__ import annotations

from typing import Any

from services.shared.topology import INFRA, SERVICES, ServiceSpec, service

LOOPBACK = "127.0.0.1"
JAEGER_CLUSTER = "jaeger_otlp"

Config = dict[str, Any]


def _address(port: int) -> Config:
    return {"socket_address": {"address": LOOPBACK, "port_value": port}}


def _cluster(name: str, port: int) -> Config:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(port)}}]}],
        },
    }


def _route(prefix: str, cluster: str) -> Config:
    # No fixed route timeout: unary calls carry their deadline in grpc-timeout, which
    # Envoy enforces; streams (heartbeats, ride watches) live as long as the client wants.
    return {
        "match": {"prefix": prefix},
        "route": {"cluster": cluster, "timeout": "0s", "max_stream_duration": {"grpc_timeout_header_max": "0s"}},
    }


def _listener(name: str, port: int, routes: list[Config], sidecar: str, sample_percent: float) -> Config:
    return {
        "name": name,
        "address": _address(port),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network."
                            "http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": name,
                            "codec_type": "AUTO",
                            "generate_request_id": True,
                            "tracing": {
                                # Traces started here (no traceparent yet) are sampled at the
                                # configured ratio; a request carrying one keeps its decision.
                                "random_sampling": {"value": sample_percent},
                                "spawn_upstream_span": True,
                                "provider": {
                                    "name": "envoy.tracers.opentelemetry",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                                        "grpc_service": {
                                            "envoy_grpc": {"cluster_name": JAEGER_CLUSTER},
                                            "timeout": "1s",
                                        },
                                        "service_name": sidecar,
                                    },
                                },
                            },
                            "route_config": {
                                "name": name,
                                "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}],
                            },
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                    },
                                }
                            ],
                        },
                    }
                ]
            }
        ],
    }


def sidecar_config(spec: ServiceSpec, sample_ratio: float = 1.0) -> Config:
    upstreams = [service(name) for name in spec.calls]
    percent = 100.0 * sample_ratio
    listeners = [_listener("ingress", spec.ingress_port, [_route("/", "local_app")], spec.sidecar, percent)]
    if upstreams:
        routes = [_route(f"/{callee.grpc_service}/", callee.name) for callee in upstreams]
        listeners.append(_listener("egress", spec.egress_port, routes, spec.sidecar, percent))
    clusters = [
        _cluster("local_app", spec.app_port),
        *(_cluster(callee.name, callee.ingress_port) for callee in upstreams),
        _cluster(JAEGER_CLUSTER, INFRA.jaeger_otlp_grpc),
    ]
    return {
        "node": {"id": spec.sidecar, "cluster": spec.name},
        "admin": {"address": _address(spec.admin_port)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def all_sidecar_configs(sample_ratio: float = 1.0) -> dict[str, Config]:
    return {spec.sidecar: sidecar_config(spec, sample_ratio) for spec in SERVICES}
