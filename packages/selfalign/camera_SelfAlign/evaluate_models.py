"""camera_SelfAlign/evaluate_models.py: evaluates CAMERA(+SelfAlign) checkpoints (itr_selfalign.evaluate_models)."""

from itr_selfalign.evaluate_models import main_camera

if __name__ == "__main__":
    main_camera()
