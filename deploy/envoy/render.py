"""Renders each service's Envoy sidecar config from the topology.

Ingress listener: the service's public address; forwards to the local app, through the
fault-injection filter (off until a drill turns it on at runtime through the admin
API's runtime layer) and, at the rider edge, a local rate limit.
Egress listener: where the app sends every outbound call; routes by gRPC service name
(the `/package.Service/` path prefix) to the callee's ingress, with route timeouts,
retries of idempotent calls under a retry budget, per-cluster limits (a bulkhead) and
outlier detection. Both report spans to Jaeger with Envoy's OpenTelemetry tracer.

One renderer serves every target (topology.TARGETS): locally callees are static loopback
ports; in compose and Kubernetes they are names that Envoy resolves through DNS, so a
Kubernetes headless Service gives one endpoint per ready pod to balance and eject."""

from __future__ import annotations

from typing import Any

from deploy import common
from services.runtime.topology import (
    COMPOSE,
    KUBERNETES,
    LOCAL,
    LOOPBACK,
    MEMBER_HEADER,
    SERVICES,
    STREAMS,
    ServiceSpec,
    Target,
    member_address,
    member_source,
    replicas_of,
    service,
)

JAEGER_CLUSTER = "jaeger_otlp"
UNARY_TIMEOUT = "10s"
EDGE_REQUESTS_PER_SECOND = 500

Config = dict[str, Any]


def _address(port: int, host: str = LOOPBACK) -> Config:
    return {"socket_address": {"address": host, "port_value": port}}


def _limits() -> Config:
    """The bulkhead: how much one caller may ask of one callee at once, and the retry budget
    (retries may add at most 20 % to the requests in flight, with a floor of 3)."""
    return {
        "thresholds": [
            {
                "priority": "DEFAULT",
                # Streams (ride watches, offers) count as requests while they are open.
                "max_connections": 256,
                "max_pending_requests": 256,
                "max_requests": 1024,
                "retry_budget": {"budget_percent": {"value": 20.0}, "min_retry_concurrency": 3},
            }
        ]
    }


def _cluster(name: str, endpoints: list[tuple[str, int]], upstream: bool = False, source: str = "") -> Config:
    """A static cluster of loopback endpoints, or one resolved through DNS for names;
    connecting from the loopback address `source`, if given."""
    resilience: Config = {}
    if upstream:
        resilience = {
            "circuit_breakers": _limits(),
            "outlier_detection": {
                "consecutive_5xx": 5,
                "consecutive_gateway_failure": 3,
                "interval": "2s",
                "base_ejection_time": "10s",
                "max_ejection_percent": 50,
            },
        }
    by_name = any(host != LOOPBACK for host, _ in endpoints)
    discovery: Config = {"type": "STRICT_DNS", "dns_lookup_family": "V4_ONLY"} if by_name else {"type": "STATIC"}
    return {
        "name": name,
        **discovery,
        "connect_timeout": "1s",
        **({"upstream_bind_config": {"source_address": {"address": source, "port_value": 0}}} if source else {}),
        **resilience,
        "typed_extension_protocol_options": _http2(),
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _address(port, host)}} for host, port in endpoints]}
            ],
        },
    }


def _http2() -> Config:
    return {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }
    }


def _stream_route(path: str, cluster: str) -> Config:
    """Streams (heartbeats, offers, ride watches) live as long as the client wants."""
    return {"match": {"path": path}, "route": {"cluster": cluster, "timeout": "0s"}}


def _unary_route(prefix: str, cluster: str, retries: bool) -> Config:
    """Unary calls: a route timeout, shortened by the caller's own deadline (grpc-timeout);
    on egress, retries of transport failures only (the connection failed or was reset).
    Answers such as UNAVAILABLE are left to the application, which retries under its own
    budget: two layers both retrying an answer would multiply the load on a sick callee."""
    route: Config = {
        "cluster": cluster,
        "timeout": UNARY_TIMEOUT,
        "max_stream_duration": {"grpc_timeout_header_max": UNARY_TIMEOUT},
    }
    if retries:
        route["retry_policy"] = {
            "retry_on": "reset,connect-failure,refused-stream",
            "num_retries": 2,
            "per_try_timeout": "3s",
            "retry_back_off": {"base_interval": "0.025s", "max_interval": "0.25s"},
        }
    return {"match": {"prefix": prefix}, "route": route}


def _routes(prefix: str, cluster: str, retries: bool) -> list[Config]:
    streams = [_stream_route(path, cluster) for path in STREAMS if path.startswith(prefix)]
    return [*streams, _unary_route(prefix, cluster, retries)]


def _member_routes(peer: ServiceSpec) -> list[Config]:
    """Replica to replica within the driver cluster: a call carrying the peer's address in
    MEMBER_HEADER goes to that replica's sidecar, not to whichever the balancer picks."""
    header = [{"name": MEMBER_HEADER, "string_match": {"exact": member_address(peer)}}]
    cluster = f"member-{peer.name}"
    routes = _routes(f"/{peer.grpc_service}/", cluster, retries=False)
    return [{**route, "match": {**route["match"], "headers": header}} for route in routes]


# By name (compose, Kubernetes) a replica's address is its pod or container IP, known only
# when it starts: Envoy's dynamic forward proxy dials the address MEMBER_HEADER names.
MEMBERS_CLUSTER = "members"
_MEMBER_DNS_CACHE: Config = {"name": "members", "dns_lookup_family": "V4_ONLY"}
_DFP = "envoy.filters.http.dynamic_forward_proxy"


def _forward_proxy_filter() -> Config:
    return {
        "name": _DFP,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig",
            "dns_cache_config": _MEMBER_DNS_CACHE,
        },
    }


def _members_cluster() -> Config:
    return {
        "name": MEMBERS_CLUSTER,
        "connect_timeout": "1s",
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {
            "name": "envoy.clusters.dynamic_forward_proxy",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.clusters.dynamic_forward_proxy.v3.ClusterConfig",
                "dns_cache_config": _MEMBER_DNS_CACHE,
                # The forward proxy wants SNI and SAN checks for TLS upstreams; the hops
                # between sidecars are plaintext like every other hop of this mesh.
                "allow_insecure_cluster_options": True,
            },
        },
        "typed_extension_protocol_options": _http2(),
    }


def _by_member_routes(spec: ServiceSpec) -> list[Config]:
    """Replica to replica by name: any call carrying MEMBER_HEADER goes to the address it
    names (the forward proxy takes the upstream host from the header)."""
    header = [{"name": MEMBER_HEADER, "present_match": True}]
    rewrite = {
        _DFP: {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_forward_proxy.v3.PerRouteConfig",
            "host_rewrite_header": MEMBER_HEADER,
        }
    }
    routes = _routes(f"/{spec.grpc_service}/", MEMBERS_CLUSTER, retries=False)
    return [{**r, "match": {**r["match"], "headers": header}, "typed_per_filter_config": rewrite} for r in routes]


def _fault_filter() -> Config:
    """Off by default; drills set fault.http.* runtime keys through the admin API."""
    return {
        "name": "envoy.filters.http.fault",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
            "abort": {"grpc_status": 14, "percentage": {"numerator": 0, "denominator": "HUNDRED"}},
            "delay": {"fixed_delay": "1s", "percentage": {"numerator": 0, "denominator": "HUNDRED"}},
        },
    }


def _edge_rate_limit() -> Config:
    """The second line behind the per-rider limit: the whole edge, whoever calls."""
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "rider_edge",
            "token_bucket": {
                "max_tokens": EDGE_REQUESTS_PER_SECOND,
                "tokens_per_fill": EDGE_REQUESTS_PER_SECOND,
                "fill_interval": "1s",
            },
            "filter_enabled": {"runtime_key": "edge_rate_limit.enabled", "default_value": {"numerator": 100}},
            "filter_enforced": {"runtime_key": "edge_rate_limit.enforced", "default_value": {"numerator": 100}},
        },
    }


def _listener(
    name: str,
    address: Config,
    routes: list[Config],
    sidecar: str,
    sample_percent: float,
    filters: list[Config],
) -> Config:
    return {
        "name": name,
        "address": address,
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
                                *filters,
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                    },
                                },
                            ],
                        },
                    }
                ]
            }
        ],
    }


def _callee_endpoints(callee: ServiceSpec, counts: dict[str, int], target: Target) -> list[tuple[str, int]]:
    if target.by_name:
        return [(target.host(callee.name), callee.ingress_port)]
    return [(LOOPBACK, r.ingress_port) for r in replicas_of(callee, counts)]


def sidecar_config(
    spec: ServiceSpec,
    sample_ratio: float = 1.0,
    replicas: dict[str, int] | None = None,
    target: Target = LOCAL,
) -> Config:
    """`spec` may be a replica (topology.replica); a callee with replicas is one cluster
    with an endpoint per replica's sidecar: Envoy balances over them and ejects outliers.
    On a target that reaches parties by name, the callee's name stands for all replicas."""
    counts = replicas or {}
    upstreams = [service(name) for name in spec.calls]
    percent = 100.0 * sample_ratio
    ingress_filters = [_fault_filter(), *([_edge_rate_limit()] if spec.name == "rider" else [])]
    ingress_routes = _routes("/", "local_app", retries=False)
    ingress = _address(spec.ingress_port, target.public_bind)
    # Spans name the service's sidecar (driver-envoy), on every replica, as the replicas'
    # applications name the service (driver); the node id names the replica's own.
    base = next(s for s in SERVICES if s.grpc_service == spec.grpc_service)
    listeners = [_listener("ingress", ingress, ingress_routes, base.sidecar, percent, ingress_filters)]
    # The driver cluster's replicas reach each other by address (forwarding to an owner):
    # locally a static cluster per replica, by name one forward proxy for every replica.
    clustered = base.name == "driver"
    peers = [r for r in replicas_of(base, counts) if r.name != spec.name] if clustered and not target.by_name else []
    by_member = clustered and target.by_name
    if upstreams or peers or by_member:
        routes = [r for peer in peers for r in _member_routes(peer)]
        routes += _by_member_routes(base) if by_member else []
        routes += [r for callee in upstreams for r in _routes(f"/{callee.grpc_service}/", callee.name, retries=True)]
        egress_filters = [_forward_proxy_filter()] if by_member else []
        listeners.append(_listener("egress", _address(spec.egress_port), routes, base.sidecar, percent, egress_filters))
    clusters = [
        _cluster("local_app", [(LOOPBACK, spec.app_port)]),
        *([_members_cluster()] if by_member else []),
        *(
            _cluster(f"member-{peer.name}", [(LOOPBACK, peer.ingress_port)], source=member_source(spec))
            for peer in peers
        ),
        *(_cluster(callee.name, _callee_endpoints(callee, counts, target), upstream=True) for callee in upstreams),
        _cluster(JAEGER_CLUSTER, [(target.host("jaeger"), target.infra.jaeger_otlp_grpc)]),
    ]
    return {
        "node": {"id": spec.sidecar, "cluster": spec.name},
        "admin": {"address": _address(spec.admin_port)},
        # Drills turn faults on and off at runtime: POST /runtime_modify on the admin port.
        "layered_runtime": {"layers": [{"name": "static", "static_layer": {}}, {"name": "admin", "admin_layer": {}}]},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


def all_sidecar_configs(
    sample_ratio: float = 1.0, replicas: dict[str, int] | None = None, target: Target = LOCAL
) -> dict[str, Config]:
    """Locally one config per replica; on a target that reaches parties by name, one per
    service, shared by its replicas."""
    counts = replicas or {}
    if target.by_name:
        return {spec.sidecar: sidecar_config(spec, sample_ratio, target=target) for spec in SERVICES}
    return {
        copy.sidecar: sidecar_config(copy, sample_ratio, counts)
        for spec in SERVICES
        for copy in replicas_of(spec, counts)
    }


KUSTOMIZATION = {"apiVersion": "kustomize.config.k8s.io/v1alpha1", "kind": "Component"}


def rendered_files() -> dict[str, str]:
    """deploy/envoy/: the one committed copy of each sidecar config, which compose mounts
    and the Kubernetes base turns into ConfigMaps (through the kustomize component here).
    Both targets reach parties by the same names, so they render the same config; this
    refuses to render if that ever stops being true."""
    configs = all_sidecar_configs(target=COMPOSE)
    if configs != all_sidecar_configs(target=KUBERNETES):
        raise ValueError("compose and Kubernetes sidecar configs differ; render one copy per target")
    files = {f"{sidecar}.yaml": common.dump(config) for sidecar, config in configs.items()}
    component = {
        **KUSTOMIZATION,
        # A changed sidecar config gets a new name (a hash suffix), so its pods roll.
        "configMapGenerator": [{"name": sidecar, "files": [f"envoy.yaml={sidecar}.yaml"]} for sidecar in configs],
    }
    files["kustomization.yaml"] = common.dump(component)
    return files
