"""CVAT Nuclio detector that forwards each frame to a running distill service.

CVAT posts ``{"image": <base64>, "threshold": <float, optional>}``; the handler sends the
frame as a one-image job (the teacher's multi-transform ensemble runs on distill's
workers) and answers CVAT's detector JSON, scores included. Settings come from the
function's environment: DISTILL_URL, DISTILL_API_KEY, DISTILL_TEACHER, DISTILL_TTA.
"""

import base64
import io
import json
import os

from PIL import Image

from service.integrations.cvat import ServiceClient, coco_to_shapes, label_plan, nuclio_results


def init_context(context):
    client = ServiceClient(os.environ["DISTILL_URL"], os.environ.get("DISTILL_API_KEY", ""),
                           os.environ.get("DISTILL_TEACHER", ""),
                           os.environ.get("DISTILL_TTA", "flip"))
    context.user_data.client = client
    context.user_data.plan = label_plan(client.teacher)


def handler(context, event):
    data = event.body
    image = Image.open(io.BytesIO(base64.b64decode(data["image"])))
    threshold = data.get("threshold")
    threshold = None if threshold is None else float(threshold)
    coco = context.user_data.client.annotate(image, threshold)
    plan = context.user_data.plan
    results = nuclio_results(coco_to_shapes(coco, plan, threshold), plan)
    return context.Response(body=json.dumps(results), headers={},
                            content_type="application/json", status_code=200)
