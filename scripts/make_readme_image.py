"""Render docs/example_annotated.png: the debug image the node publishes for one answer.

The answer text is the scripted SpatialThinker-format answer the end-to-end
tests use (boxes framing the synthetic scene's objects), run through the real
parser, model-frame mapping, 3D lifting and annotation code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "spatialthinker_ros" / "test" / "fixtures"))

from node_harness import scripted_reply  # noqa: E402

from spatialthinker_ros.core.annotate import draw_annotations  # noqa: E402
from spatialthinker_ros.core.lifting import lift_boxes  # noqa: E402
from spatialthinker_ros.core.model_frame import plan_model_frame, scale_boxes  # noqa: E402
from spatialthinker_ros.core.parsing import parse_output  # noqa: E402
from spatialthinker_ros.core.prompt import build_prompt  # noqa: E402
from spatialthinker_ros.core.synthetic_scene import demo_scene  # noqa: E402

QUESTION = "Is the red box in front of or behind the green box?"
OPTIONS = ["in front", "behind"]


def main() -> None:
    scene = demo_scene()
    height, width = scene.rgb.shape[:2]
    frame = plan_model_frame(width, height)
    prompt = build_prompt(QUESTION, OPTIONS, frame.stated_size)
    text = scripted_reply(scene)({"messages": [{"content": [{"type": "text", "text": prompt}]}]})
    result = parse_output(text, image_size=frame.stated_size, options=OPTIONS)
    boxes = scale_boxes([o.bbox for o in result.objects], frame.stated_size, (width, height))
    lifted = lift_boxes(boxes, scene.depth_m, scene.intrinsics, image_size=(width, height))
    objects = [
        (obj.id, box, f"{np.linalg.norm(est.center):.2f} m" if est.has_3d else None)
        for obj, box, est in zip(result.objects, boxes, lifted, strict=True)
    ]
    image = draw_annotations(scene.rgb, objects, answer=result.answer, question=QUESTION)
    out = ROOT / "docs" / "example_annotated.jpg"
    cv2.imwrite(str(out), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 88])
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
