"""python -m iwp.evaluate: the toy accuracy benchmark (iwp/evaluate/toy.py)."""
from .toy import main

if __name__ == "__main__":
    main()
