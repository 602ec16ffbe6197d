"""`python -m beam_pipeline.metadata build|validate|count ...`"""

from beam_pipeline.metadata import main

if __name__ == "__main__":
    main()
