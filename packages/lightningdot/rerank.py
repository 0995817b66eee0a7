"""The original script name: ``python rerank.py --config config/flickr30k_eval_config.json
--biencoder_checkpoint biencoder.best.pt --uniter_checkpoint model_step_5000.pt --uniter_config uniter-base.json``."""

from itr_lightningdot.rerank import main

if __name__ == "__main__":
    raise SystemExit(main())
