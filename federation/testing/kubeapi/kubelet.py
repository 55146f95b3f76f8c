"""What a cluster's own components do to the objects a spawner creates: the kubelet starts a Pod
(Running and Ready with a pod IP after ``pod_ready_delay`` seconds) and ends a deleted one
(marked terminating, gone after ``pod_stop_delay``); the Service controller gives a Service its
cluster IP and the defaults the apiserver fills in.

Pod status changes are stored events like any other, so ``kubectl wait --for=condition=Ready``
and ``kubectl delete --wait`` watch them as they would on a real cluster.
"""

from __future__ import annotations

import itertools
import json
import threading
from typing import Any

from .common import _now
from .resources import _Resource, _Stored
from .store import StoreMixin


def _is(res: _Resource, plural: str) -> bool:
    return not res.group and res.plural == plural


def _running_status(pod: dict[str, Any], ip: str, node_ip: str) -> dict[str, Any]:
    now = _now()
    conditions = [{"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
                  for t in ("PodReadyToStartContainers", "Initialized", "Ready",
                            "ContainersReady", "PodScheduled")]
    containers = [
        {"name": c.get("name", ""), "image": c.get("image", ""), "imageID": "", "ready": True,
         "restartCount": 0, "started": True, "state": {"running": {"startedAt": now}}}
        for c in (pod.get("spec") or {}).get("containers") or []
    ]
    return {"phase": "Running", "conditions": conditions, "hostIP": node_ip,
            "hostIPs": [{"ip": node_ip}], "podIP": ip, "podIPs": [{"ip": ip}],
            "startTime": now, "containerStatuses": containers, "qosClass": "BestEffort"}


def _service_defaults(spec: dict[str, Any], cluster_ip: str) -> None:
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
        spec["clusterIP"] = cluster_ip
        spec["clusterIPs"] = [cluster_ip]
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))


class KubeletMixin(StoreMixin):
    """The stand-in kubelet and Service defaults; ``kubelet = False`` leaves Pods pending."""

    kubelet: bool
    pod_ready_delay: float
    pod_stop_delay: float
    _timers: set[threading.Timer]
    _addresses: itertools.count[int]
    _cluster_index: int

    def _init_kubelet(self, enabled: bool, ready_delay: float, stop_delay: float,
                      cluster_index: int) -> None:
        self.kubelet = enabled
        self.pod_ready_delay = ready_delay
        self.pod_stop_delay = stop_delay
        self._timers = set()
        self._addresses = itertools.count(2)
        self._cluster_index = cluster_index % 200

    def _stop_kubelet(self) -> None:
        for timer in list(self._timers):
            timer.cancel()
        self._timers.clear()

    def _later(self, delay: float, action: Any, *args: Any) -> None:
        timer = threading.Timer(max(0.0, delay), self._run_timer, (action, args))
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _run_timer(self, action: Any, args: tuple[Any, ...]) -> None:
        self._timers.discard(threading.current_thread())  # type: ignore[arg-type]
        action(*args)

    def _address(self, network: int) -> str:
        n = next(self._addresses)
        return f"10.{network}.{self._cluster_index}.{n % 250 + 2}"

    # hooks called by the store

    def _set_defaults(self, res: _Resource, obj: dict[str, Any]) -> None:
        if _is(res, "services"):
            _service_defaults(obj.setdefault("spec", {}), self._address(96))
        elif _is(res, "pods"):
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}

    def _after_create(self, res: _Resource, key: tuple[str, str], stored: _Stored) -> None:
        if self.kubelet and _is(res, "pods"):
            uid = stored.obj["metadata"]["uid"]
            self._later(self.pod_ready_delay, self._start_pod, res, key, uid)

    def _graceful_delete_locked(self, res: _Resource, key: tuple[str, str], cur: _Stored,
                                options: dict[str, Any]) -> _Stored | None:
        """A deleted Pod first turns terminating; the kubelet removes it. Lock held."""
        if not (self.kubelet and _is(res, "pods")):
            return None
        meta = cur.obj["metadata"]
        if meta.get("deletionTimestamp"):
            return cur
        grace = options.get("gracePeriodSeconds")
        new = json.loads(cur.raw)
        new["metadata"]["deletionTimestamp"] = _now()
        new["metadata"]["deletionGracePeriodSeconds"] = 30 if grace is None else int(grace)
        stored = self._commit_locked(res, "MODIFIED", key, new, cur.obj)
        delay = 0.0 if grace == 0 else self.pod_stop_delay
        self._later(delay, self._remove_pod, res, key, meta["uid"])
        return stored

    # the kubelet's own writes

    def _start_pod(self, res: _Resource, key: tuple[str, str], uid: str) -> None:
        with self._lock:
            cur = res.objects.get(key)
            if cur is None or cur.obj["metadata"]["uid"] != uid:
                return
            if cur.obj["metadata"].get("deletionTimestamp"):
                return
            new = json.loads(cur.raw)
            node_ip = f"172.18.{self._cluster_index}.2"
            new.setdefault("spec", {})["nodeName"] = f"node-{self._cluster_index}"
            new["status"] = _running_status(new, self._address(244), node_ip)
            self._commit_locked(res, "MODIFIED", key, new, cur.obj)

    def _remove_pod(self, res: _Resource, key: tuple[str, str], uid: str) -> None:
        with self._lock:
            cur = res.objects.get(key)
            if cur is None or cur.obj["metadata"]["uid"] != uid:
                return
            self._commit_locked(res, "DELETED", key, json.loads(cur.raw), cur.obj)
