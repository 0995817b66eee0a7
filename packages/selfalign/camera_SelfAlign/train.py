"""camera_SelfAlign/train.py: the README's training script of CAMERA+SelfAlign (see itr_selfalign.train)."""

from itr_selfalign.train import main_camera

if __name__ == "__main__":
    main_camera()
