/* The staff screen's script (edge/screens/templates/staff/base.html inlines it; its CSP hash is computed from
   this file). After a tap the buttons are disabled (one post per tap). A card that needs the staff member's
   PIN again has its own field (input.need), never filled in by the page; the reload waits while someone types
   in it, and a PIN typed there and left alone is cleared by the next reload (30 s after the last keystroke or
   focus). The login page does not reload itself (data-refresh 0). */
(function(){
var sent=false;
document.querySelectorAll('form.decide').forEach(function(f){f.addEventListener('submit',function(e){
if(sent){e.preventDefault();return;}sent=true;
setTimeout(function(){document.querySelectorAll('button').forEach(function(b){b.disabled=true;});},0);});});
var busy=0,HOLD=30000;
document.querySelectorAll('input.need').forEach(function(i){['focus','input'].forEach(function(t){
i.addEventListener(t,function(){busy=Date.now();});});});
/* A card this browser session has not shown before is highlighted (class new) and the page beeps twice:
   an 880 Hz tone made with WebAudio, no sound file. */
var SEEN='meal-edge-seen',seen=[],fresh=[];
try{seen=JSON.parse(sessionStorage.getItem(SEEN)||'[]');}catch(e){}
document.querySelectorAll('li.card').forEach(function(c){if(seen.indexOf(c.id)<0){fresh.push(c.id);
c.classList.add('new');}});
if(fresh.length){try{sessionStorage.setItem(SEEN,JSON.stringify(seen.concat(fresh).slice(-200)));}catch(e){}
beep();}
function beep(){try{var A=window.AudioContext||window.webkitAudioContext;if(!A){return;}var a=new A();
[0,0.35].forEach(function(t){var o=a.createOscillator(),g=a.createGain();o.type='sine';o.frequency.value=880;
g.gain.setValueAtTime(0.0001,a.currentTime+t);g.gain.exponentialRampToValueAtTime(0.4,a.currentTime+t+0.02);
g.gain.exponentialRampToValueAtTime(0.0001,a.currentTime+t+0.25);o.connect(g);g.connect(a.destination);
o.start(a.currentTime+t);o.stop(a.currentTime+t+0.3);});window.mealEdgeBeeps=(window.mealEdgeBeeps||0)+1;}
catch(e){}}
var wait=parseInt(document.body.getAttribute('data-refresh'),10)*1000;
function tick(){if(sent||Date.now()-busy<HOLD){setTimeout(tick,wait);return;}
location.replace('/');}
if(wait>0){setTimeout(tick,wait);}
})();
