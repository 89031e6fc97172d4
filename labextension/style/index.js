import './base.css';
import './pictures.css';
