"""Run webhooks (CONTRACT section 9): the API and admin that manage them (`api.py`, the
admin's `admin/webhooks.py`), how a delivery is signed (`signing.py`) and the background
sender that delivers them (`delivery.py`). What a run event queues is the store's
(store/webhooks.py): written with the run state it reports."""
